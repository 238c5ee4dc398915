"""The finetune command refuses each bad-input class in one line (exit 2) and leaves no run folder behind.

Cases marked ``early`` must be refused before any model is built, loaded or pretrained:
there, building a model fails the test with another message.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from haq_gym.finetune import command
from haq_gym.models import build_model, save_checkpoint
from haq_gym.policy import PolicyFile
from haq_gym.quant import wrap_model

TINY = ["--width-mult", "0.35", "--no-progress", "--epochs", "1"]


def _policy_file(folder: Path, model: str, width_mult: float, **model_kwargs) -> str:
    names = [n for n, _ in wrap_model(build_model(model, num_classes=10, width_mult=width_mult))]
    path = folder / f"{model}_policy.json"
    PolicyFile(
        "mobilenetv2", "digits", names, [[8, 8]] * len(names), model_kwargs={"width_mult": 0.35, **model_kwargs}
    ).save(path)
    return str(path)


def _resumable(folder: Path, config_text: str) -> str:
    run = folder / "old_run"
    run.mkdir()
    (run / "last.pt").write_bytes(b"not read: the config is refused first")
    (run / "config.yml").write_text(config_text)
    return str(run)


def _write(folder: Path, name: str, data: bytes | str) -> str:
    path = folder / name
    path.write_bytes(data) if isinstance(data, bytes) else path.write_text(data)
    return str(path)


# (case id, early, argv builder(tmp_path, tiny_checkpoint) -> argv without --output, expected message)
CASES = [
    (
        "random_bytes_checkpoint",
        False,
        lambda d, ck: ["--w-bits", "4", "--a-bits", "4", "--init-checkpoint", _write(d, "r.pt", bytes(range(256)) * 8)],
        "checkpoint is corrupt",
    ),
    (
        "checkpoint_of_other_shapes",
        False,
        lambda d, ck: ["--w-bits", "4", "--a-bits", "4", "--init-checkpoint", _wide_checkpoint(d)],
        "does not fit",
    ),
    (
        "policy_json_not_an_object",
        True,
        lambda d, ck: ["--policy", _write(d, "p.json", '"hello"')],
        "expected a JSON object, got str",
    ),
    (
        "policy_model_kwargs_null",
        True,
        lambda d, ck: [
            "--policy",
            _write(
                d,
                "p.json",
                json.dumps(
                    {
                        "format": "haq-gym-policy",
                        "version": 1,
                        "model": "mobilenetv2",
                        "dataset": "digits",
                        "layers": [],
                        "model_kwargs": None,
                    }
                ),
            ),
        ],
        "model_kwargs must be a JSON object, got None",
    ),
    (
        "policy_for_another_model",
        True,
        lambda d, ck: ["--policy", _policy_file(d, "resnet20", 1.0)],
        "policy has 20 layers but the model has 53",
    ),
    (
        "policy_num_classes_differs",
        True,
        lambda d, ck: ["--policy", _policy_file(d, "mobilenetv2", 0.35, num_classes=100)],
        "model_kwargs.num_classes is 100, but dataset 'digits' has 10 classes",
    ),
    (
        "width_mult_0",
        True,
        lambda d, ck: ["--w-bits", "4", "--a-bits", "4", "--width-mult", "0"],
        "--width-mult must be a finite number in (0, 4], got 0.0",
    ),
    ("w_bits_out_of_range", True, lambda d, ck: ["--w-bits", "9", "--a-bits", "4"], "--w-bits must be in 2..8, got 9"),
    (
        "negative_seed",
        True,
        lambda d, ck: ["--w-bits", "4", "--a-bits", "4", "--seed", "-1"],
        "--seed must be an integer in [0, 4294967295], got -1",
    ),
    (
        "train_step_unknown",
        True,
        lambda d, ck: ["--w-bits", "4", "--a-bits", "4", "--train-step", "fast"],
        "--train-step must be one of auto, graph, graph-compile, compile, plain; got 'fast'",
    ),
    (
        "epochs_with_resume",
        True,
        lambda d, ck: ["--resume", _resumable(d, "mode: float\n"), "--epochs", "5"],
        "--resume continues the run with the recipe in its config.yml; drop --epochs",
    ),
    (
        "invalid_yaml_in_run_config",
        True,
        lambda d, ck: ["--resume", _resumable(d, "mode: [float\n")],
        "config.yml' is not valid YAML",
    ),
    (
        "run_config_not_a_mapping",
        True,
        lambda d, ck: ["--resume", _resumable(d, "- 1\n- 2\n")],
        "is not a finetune run config",
    ),
]


def _wide_checkpoint(folder: Path) -> str:
    path = folder / "wide.pt"
    save_checkpoint(path, build_model("mobilenetv2", 10, 1.0), {})
    return str(path)


@pytest.mark.parametrize("case,early,argv,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_leaves_no_folder(
    case, early, argv, expected, tmp_path, tiny_checkpoint, monkeypatch, capsys
) -> None:
    if early:

        def no_model_work(*args, **kwargs):
            raise AssertionError("a model was built before the input was checked")

        monkeypatch.setattr(command.QuantizedModel, "from_float", no_model_work)
        monkeypatch.setattr(command.QuantizedModel, "from_checkpoint", no_model_work)
    out = tmp_path / "out"
    args = argv(tmp_path, tiny_checkpoint)
    resume = "--resume" in args  # a resumed run takes no recipe flags or --output
    assert command.main(["--no-progress", *args] if resume else [*TINY, *args, "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.startswith("error: ") and err.count("\n") == 1, err
    assert not out.exists()


def test_cuda_device_on_a_cpu_only_torch(tmp_path, tiny_checkpoint, capsys) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    out = tmp_path / "out"
    assert (
        command.main(
            [
                *TINY,
                "--w-bits",
                "4",
                "--a-bits",
                "4",
                "--init-checkpoint",
                tiny_checkpoint,
                "--device",
                "cuda",
                "--output",
                str(out),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "--device: device 'cuda': this torch build sees no CUDA device" in err and err.count("\n") == 1
    assert not out.exists()


def test_unwritable_output_is_one_line(tmp_path, tiny_checkpoint, capsys) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder\n")
    out = blocker / "run"  # under a regular file: refused even for root
    assert (
        command.main(
            [*TINY, "--w-bits", "4", "--a-bits", "4", "--init-checkpoint", tiny_checkpoint, "--output", str(out)]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert f"cannot create run folder '{out}'" in err and err.count("\n") == 1, err
