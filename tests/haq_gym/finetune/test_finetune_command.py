"""The finetune command end to end on a tiny random-init model (width 0.35, digits, 1-2 epochs)."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from torch import nn

from haq_gym.finetune import load_qat_checkpoint
from haq_gym.finetune import trainer as trainer_module
from haq_gym.finetune.command import main
from haq_gym.models import build_model, save_checkpoint
from haq_gym.policy import PolicyFile
from haq_gym.quant import wrap_model
from haq_gym.quant.lsq import LSQQuantizer

TINY = ["--width-mult", "0.35", "--no-progress", "--seed", "0"]


def _rows(run_dir):
    with open(run_dir / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def w4a4_run(tmp_path_factory, tiny_checkpoint):
    out = tmp_path_factory.mktemp("ft") / "w4a4"
    assert (
        main(
            [
                "--w-bits",
                "4",
                "--a-bits",
                "4",
                "--epochs",
                "1",
                "--init-checkpoint",
                tiny_checkpoint,
                "--output",
                str(out),
                *TINY,
            ]
        )
        == 0
    )
    return out


def test_uniform_run_writes_folder_and_checkpoint_with_policy(w4a4_run):
    for name in (
        "config.yml",
        "policy.json",
        "metrics.csv",
        "last.pt",
        "best.pt",
        "tensorboard",
        "training_curves.png",
    ):
        assert (w4a4_run / name).exists(), name
    rows = _rows(w4a4_run)
    assert [int(r["epoch"]) for r in rows] == [1] and 0.0 <= float(rows[0]["test_top1"]) <= 100.0
    ckpt = load_qat_checkpoint(w4a4_run / "best.pt")
    bits = [[layer.w_bit, layer.a_bit] for _, layer in ckpt.layers]
    assert bits[0] == [8, -1] and bits[-1] == [8, 8] and all(b == [4, 4] for b in bits[1:-1])
    assert ckpt.policy.bits == bits and ckpt.family == "lsq"
    quantizers = [m for m in ckpt.model.modules() if isinstance(m, LSQQuantizer) and m.bits is not None]
    assert quantizers and all(
        q.is_initialized and bool(q.initialized) and q.current_step().item() > 0 for q in quantizers
    )
    assert ckpt.policy.accuracy["finetune_test_top1"] == pytest.approx(float(_rows(w4a4_run)[0]["test_top1"]))


def test_resuming_a_finished_run_says_so(w4a4_run, capsys):
    assert main(["--resume", str(w4a4_run), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "had already finished its 1 epochs; nothing left to train" in out and "nan" not in out
    assert [int(r["epoch"]) for r in _rows(w4a4_run)] == [1]


def test_lsq_checkpoint_starts_a_lower_precision_policy(w4a4_run, tmp_path):
    """Seed 000's flow: start from a uniform LSQ model, keep its learned clip ranges at the new bits."""
    start = load_qat_checkpoint(w4a4_run / "last.pt")
    step4 = start.layers[5][1].weight_quantizer.step.item()
    layer_names = [n for n, _ in start.layers]
    bits = [[8, -1]] + [[2, 3]] * (len(layer_names) - 2) + [[8, 8]]
    policy = PolicyFile("mobilenetv2", "digits", layer_names, bits, model_kwargs={"width_mult": 0.35})
    policy.save(tmp_path / "p.json")
    out = tmp_path / "from_w4a4"
    assert (
        main(
            [
                "--policy",
                str(tmp_path / "p.json"),
                "--epochs",
                "1",
                "--init-checkpoint",
                str(w4a4_run / "last.pt"),
                "--output",
                str(out),
                "--no-progress",
                "--lr",
                "0",
            ]
        )
        == 2
    )  # lr must be positive
    assert not (out / "last.pt").exists()
    # A tiny positive lr barely moves the step, so the rescaling by Qp(4 bit)/Qp(2 bit) = 7 shows.
    assert (
        main(
            [
                "--policy",
                str(tmp_path / "p.json"),
                "--epochs",
                "1",
                "--init-checkpoint",
                str(w4a4_run / "last.pt"),
                "--output",
                str(out),
                "--no-progress",
                "--lr",
                "1e-9",
            ]
        )
        == 0
    )
    after = load_qat_checkpoint(out / "last.pt")
    assert after.layers[5][1].weight_quantizer.step.item() == pytest.approx(step4 * 7, rel=1e-3)
    assert [[layer.w_bit, layer.a_bit] for _, layer in after.layers] == bits


def test_resume_after_crash_equals_uninterrupted_run(tmp_path, tiny_checkpoint, monkeypatch):
    # the random-init W3A3 model diverges at the default lr 0.01 with one thread (not at two)
    recipe = ["--w-bits", "3", "--a-bits", "3", "--epochs", "2", "--lr", "1e-3"]
    common = [*recipe, "--init-checkpoint", tiny_checkpoint, *TINY]
    assert main(common + ["--output", str(tmp_path / "straight")]) == 0

    calls = {"n": 0}
    real_eval = trainer_module.top1_accuracy

    def crash_in_second_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # validation and test after every epoch: the third call is in epoch 2
            raise KeyboardInterrupt("simulated crash")
        return real_eval(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "top1_accuracy", crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        main(common + ["--output", str(tmp_path / "crashed")])
    monkeypatch.setattr(trainer_module, "top1_accuracy", real_eval)
    assert [int(r["epoch"]) for r in _rows(tmp_path / "crashed")] == [1]
    assert main(["--resume", str(tmp_path / "crashed"), "--no-progress"]) == 0

    def trajectory(run):
        return [(r["epoch"], r["train_loss"], r["test_top1"]) for r in _rows(tmp_path / run)]

    assert trajectory("crashed") == trajectory("straight") and len(trajectory("straight")) == 2
    rows = _rows(tmp_path / "straight")
    best = load_qat_checkpoint(tmp_path / "straight" / "best.pt")
    best_epoch = max(rows, key=lambda r: (float(r["val_top1"]), -int(r["epoch"])))["epoch"]
    assert int(best.meta["epoch"]) == int(best_epoch)  # chosen on validation, whatever the test split says
    assert best.policy.accuracy["finetune_val_top1"] == pytest.approx(float(rows[int(best_epoch) - 1]["val_top1"]))
    a = load_qat_checkpoint(tmp_path / "straight" / "last.pt").model.state_dict()
    b = load_qat_checkpoint(tmp_path / "crashed" / "last.pt").model.state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    calls = {"n": 0}
    real_forward = nn.CrossEntropyLoss.forward
    steps_per_epoch = math.ceil(1077 / 64)

    def nan_in_second_epoch(self, logits, target):
        calls["n"] += 1
        loss = real_forward(self, logits, target)
        return loss * float("nan") if calls["n"] > steps_per_epoch + 2 else loss

    monkeypatch.setattr(nn.CrossEntropyLoss, "forward", nan_in_second_epoch)
    out = tmp_path / "nan"
    code = main(
        [
            "--w-bits",
            "4",
            "--a-bits",
            "4",
            "--epochs",
            "2",
            "--init-checkpoint",
            tiny_checkpoint,
            "--lr",
            "1e-3",
            "--output",
            str(out),
            *TINY,
        ]
    )
    assert code == 3
    err = capsys.readouterr().err
    assert "loss became nan at epoch 2" in err and "last.pt" in err
    kept = load_qat_checkpoint(out / "last.pt")
    assert kept.meta["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in kept.model.state_dict().values() if v.is_floating_point())


def test_bad_inputs_give_clear_errors(tmp_path, tiny_checkpoint, capsys):
    def error_of(argv):
        assert main(argv) == 2
        return capsys.readouterr().err

    assert "--w-bits must be in 2..8, got 9" in error_of(
        ["--w-bits", "9", "--a-bits", "4", "--init-checkpoint", tiny_checkpoint, *TINY, "--output", str(tmp_path / "a")]
    )
    assert "--w-bits and --a-bits go together" in error_of(["--w-bits", "4", *TINY])
    # a checkpoint of another architecture (width 1.0 vs 0.35)
    wide = tmp_path / "wide.pt"
    save_checkpoint(wide, build_model("mobilenetv2", 10, 1.0), {})
    msg = error_of(
        ["--w-bits", "4", "--a-bits", "4", "--init-checkpoint", str(wide), *TINY, "--output", str(tmp_path / "b")]
    )
    assert "wide.pt" in msg and "does not fit" in msg
    # a policy for another model: layer count and names differ
    other = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3), nn.Flatten(), nn.Linear(4 * 28 * 28, 10))
    names = [n for n, _ in wrap_model(other)]
    PolicyFile("mobilenetv2", "digits", names, [[8, -1], [4, 4], [8, 8]], model_kwargs={"width_mult": 0.35}).save(
        tmp_path / "other.json"
    )
    msg = error_of(
        [
            "--policy",
            str(tmp_path / "other.json"),
            "--init-checkpoint",
            tiny_checkpoint,
            "--no-progress",
            "--output",
            str(tmp_path / "c"),
        ]
    )
    assert "policy has 3 layers but the model has 53" in msg
    assert not (tmp_path / "c").exists()


def test_haq_linear_quantizer_trains_its_activation_range_and_reloads(tmp_path, tiny_checkpoint):
    """HAQ's QAT path (``--quantizer haq``): trains, and the checkpoint (ranges included) reloads exactly.

    (The random-init test model's activations are ~1e-9 deep in the net, so its activation
    ranges get huge gradients; that the range learns is checked in tests/haq_gym/test_haq_fidelity.py.)
    """
    from haq_gym.data import load_dataset, materialize
    from haq_gym.evaluation.accuracy import top1_accuracy
    from haq_gym.quant.haq_linear import HAQActivationQuantizer

    out = tmp_path / "haq"
    assert (
        main(
            [
                "--w-bits",
                "3",
                "--a-bits",
                "3",
                "--epochs",
                "1",
                "--batch-size",
                "256",
                "--quantizer",
                "haq",
                "--init-checkpoint",
                tiny_checkpoint,
                "--output",
                str(out),
                *TINY,
            ]
        )
        == 0
    )
    ckpt = load_qat_checkpoint(out / "best.pt")
    assert ckpt.family == "haq"
    saved = torch.load(out / "best.pt", weights_only=True)["state_dict"]
    quantizers = [(n, m) for n, m in ckpt.model.named_modules() if isinstance(m, HAQActivationQuantizer) and m.bits]
    assert quantizers and all(
        float(m.activation_range.detach()) == float(saved[f"{n}.activation_range"]) for n, m in quantizers
    )
    assert any(float(saved[f"{n}.activation_range"]) != 6.0 for n, _ in quantizers)  # calibrated, not the initial 6.0
    val_x, val_y = materialize(load_dataset("digits", None).search_val)
    acc = top1_accuracy(ckpt.model, val_x.contiguous(memory_format=torch.channels_last), val_y)
    assert acc == pytest.approx(float(_rows(out)[0]["val_top1"]), abs=1e-4)  # metrics.csv keeps 6 digits


def test_kmeans_long_finetune_frees_high_bit_layers_then_reclusters_everything(tmp_path, tiny_checkpoint):
    """HAQ's k-means finetune: 7-bit layers float until the last epoch, then all re-clustered; best.pt only then."""
    model = build_model("mobilenetv2", num_classes=10, width_mult=0.35)
    names = [n for n, _ in wrap_model(model)]
    bits = [[7 if i % 3 == 0 else 1 + i % 2, -1] for i in range(len(names))]
    policy_path = tmp_path / "kmeans_policy.json"
    PolicyFile(
        model="mobilenetv2", dataset="digits", layer_names=names, bits=bits, model_kwargs={"width_mult": 0.35}
    ).save(policy_path)
    out = tmp_path / "km"
    assert (
        main(
            [
                "--policy",
                str(policy_path),
                "--quantizer",
                "kmeans",
                "--free-high-bit",
                "--epochs",
                "2",
                "--batch-size",
                "256",
                "--init-checkpoint",
                tiny_checkpoint,
                "--output",
                str(out),
                *TINY,
            ]
        )
        == 0
    )
    rows = _rows(out)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    ckpt = load_qat_checkpoint(out / "best.pt")
    assert ckpt.family == "kmeans" and ckpt.meta["epoch"] == 2  # epoch 1 had free layers: never best.pt
    for (name, layer), (w, _) in zip(ckpt.layers, bits, strict=True):
        distinct = torch.unique(layer.weight.detach()).numel()
        assert distinct <= 2**w, (name, w, distinct)  # shared weights, the 7-bit layers re-clustered too
    assert (
        main(
            [
                "--policy",
                str(policy_path),
                "--quantizer",
                "lsq",
                "--free-high-bit",
                "--epochs",
                "1",
                "--output",
                str(tmp_path / "bad"),
                *TINY,
            ]
        )
        == 2
    )


@pytest.mark.parametrize("flag,env,expected", [(["--train-step", "plain"], None, "plain"), ([], "compile", None)])
def test_train_step_flag_reaches_the_trainer(flag, env, expected, tmp_path, tiny_checkpoint, monkeypatch):
    """``--train-step`` is passed to the trainer; without it the trainer reads ``$HAQ_GYM_TRAIN_STEP`` itself."""
    from haq_gym.finetune import command

    class Reached(Exception):
        pass

    def fake_train(*args, train_step=None, **kwargs):
        raise Reached(train_step)

    monkeypatch.setattr(command, "train_quantized", fake_train)
    if env is None:
        monkeypatch.delenv("HAQ_GYM_TRAIN_STEP", raising=False)
    else:
        monkeypatch.setenv("HAQ_GYM_TRAIN_STEP", env)
    argv = ["--w-bits", "4", "--a-bits", "4", "--epochs", "1", "--init-checkpoint", tiny_checkpoint, *TINY, *flag]
    with pytest.raises(Reached) as reached:
        main([*argv, "--output", str(tmp_path / "run")])
    assert reached.value.args == (expected,)


def test_bad_train_step_environment_variable_is_one_line(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    monkeypatch.setenv("HAQ_GYM_TRAIN_STEP", "graphs")
    argv = ["--w-bits", "4", "--a-bits", "4", "--init-checkpoint", tiny_checkpoint, *TINY]
    assert main([*argv, "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err == "error: HAQ_GYM_TRAIN_STEP must be one of auto, graph, graph-compile, compile, plain; got 'graphs'\n"
    assert not (tmp_path / "run").exists()
