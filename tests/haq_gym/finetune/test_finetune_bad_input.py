"""The finetune command: every bad-input class is one line before data is loaded or a model trained."""

from __future__ import annotations

import json
import os

import pytest
import torch

import haq_gym.finetune.__main__ as finetune_cli
from haq_gym.finetune.checkpoint import quantize_model, save_qat_checkpoint
from haq_gym.finetune.__main__ import main
from haq_gym.integrity import seal
from haq_gym.models import build_model
from haq_gym.policy import PolicyFile, uniform_bits
from haq_gym.quant import wrap_model

TINY = ["--width-mult", "0.35", "--no-progress", "--seed", "0"]


@pytest.fixture
def never_trains(monkeypatch):
    """Fail the test if the default float model would be trained or loaded (the expensive part)."""
    def refuse(*args, **kwargs):
        raise AssertionError("the default model was built before the input was validated")
    monkeypatch.setattr("haq_gym.quantized_model.ensure_default_checkpoint", refuse)
    monkeypatch.setattr(finetune_cli, "load_dataset", refuse)


def mobilenet_names(width: float = 0.35) -> list[str]:
    return [n for n, _ in wrap_model(build_model("mobilenetv2", num_classes=10, width_mult=width))]


def error_of(capsys, argv, code: int = 2) -> str:
    assert main(argv) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def write_json(path, document) -> str:
    path.write_text(json.dumps(document))
    return os.fspath(path)


def policy_document(names: list[str], **changes) -> dict:
    doc = PolicyFile("mobilenetv2", "digits", names, uniform_bits(len(names), 4, 4),
                     model_kwargs={"width_mult": 0.35}).to_dict()
    doc.update(changes)
    return doc


@pytest.mark.parametrize("flags,expected", [
    (["--w-bits", "4", "--a-bits", "4", "--seed", "-1"], "--seed must be an integer in [0, 4294967295], got -1"),
    (["--w-bits", "4", "--a-bits", "4", "--width-mult", "0"], "--width-mult must be a finite number in (0, 4], got 0"),
    (["--w-bits", "9", "--a-bits", "4"], "--w-bits must be an integer in [2, 8], got 9"),
    (["--w-bits", "4", "--a-bits", "4", "--epochs", "0"], "--epochs must be an integer >= 1, got 0"),
    (["--w-bits", "4", "--a-bits", "4", "--lr", "0"], "--lr must be a finite number > 0, got 0.0"),
    (["--w-bits", "4", "--a-bits", "4", "--lr", "nan"], "--lr must be a finite number > 0, got nan"),
    (["--w-bits", "4", "--a-bits", "4", "--momentum", "1.5"], "--momentum must be a finite number in [0, 1]"),
    (["--resume", "anything", "--epochs", "5"], "--epochs cannot change a resumed run"),
])
def test_bad_flags(never_trains, tmp_path, capsys, flags, expected) -> None:
    out = tmp_path / "run"
    assert expected in error_of(capsys, [*TINY, *flags, "--output", str(out)])
    assert not out.exists()


def test_cuda_on_a_cpu_only_torch(never_trains, tmp_path, capsys) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    assert "sees no CUDA device" in error_of(capsys, ["--w-bits", "4", "--a-bits", "4", *TINY, "--device", "cuda",
                                                      "--output", str(tmp_path / "run")])


@pytest.mark.parametrize("document,expected", [
    ([1, 2, 3], "a HAQ strategy is a list of [w_bit, a_bit] integer pairs"),  # a list is read as HAQ's format
    ("just a string", "expected a JSON object, got str"),
    ({"model_kwargs": None}, "model_kwargs must be a JSON object, got None"),
    ({"model": "resnet20"}, "policy has 53 layers but the model has 20 quantizable layers"),
    ({"model_kwargs": {"width_mult": 0.35, "num_classes": 100}}, None),  # checked against the dataset below
    ({"model_kwargs": {"width_mult": 0}}, "width_mult must be a finite number in (0, 4], got 0"),
])
def test_bad_policy_files(monkeypatch, tmp_path, capsys, document, expected) -> None:
    if isinstance(document, dict):
        document = policy_document(mobilenet_names(), **document)
    path = write_json(tmp_path / "policy.json", document)
    if expected is None:  # the dataset is loaded (cheap), the model never trained
        monkeypatch.setattr("haq_gym.quantized_model.ensure_default_checkpoint",
                            lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained")))
        expected = "model_kwargs.num_classes is 100, but dataset 'digits' has 10 classes"
    else:
        monkeypatch.setattr(finetune_cli, "load_dataset", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    assert expected in error_of(capsys, ["--policy", path, "--no-progress", "--output", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()


def test_random_bytes_as_init_checkpoint(tmp_path, capsys) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(2048))
    err = error_of(capsys, ["--w-bits", "4", "--a-bits", "4", "--init-checkpoint", str(junk), *TINY,
                            "--output", str(tmp_path / "run")])
    assert f"checkpoint is corrupt: {junk}" in err
    assert not (tmp_path / "run").exists()


def test_qat_checkpoint_with_mismatched_shapes(tmp_path, capsys) -> None:
    model = build_model("mobilenetv2", 10, width_mult=0.35)
    names = mobilenet_names()
    policy = PolicyFile("mobilenetv2", "digits", names, uniform_bits(len(names), 4, 4), model_kwargs={"width_mult": 0.35})
    quantize_model(model, policy, "lsq")
    path = tmp_path / "qat.pt"
    save_qat_checkpoint(path, model, policy, "lsq", {"model": "mobilenetv2", "width_mult": 0.35, "num_classes": 10})
    data = torch.load(path, weights_only=True)
    data["state_dict"]["classifier.1.bias"] = torch.zeros(7)  # same keys, one wrong shape (a crafted file)
    del data["checksum"]
    torch.save(seal(data), path)
    err = error_of(capsys, ["--w-bits", "4", "--a-bits", "4", "--init-checkpoint", str(path), *TINY,
                            "--output", str(tmp_path / "run")])
    assert "qat.pt" in err and "does not fit the model" in err and "classifier.1.bias" in err


def test_resume_with_invalid_config_yaml(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(b"x")
    (run / "config.yml").write_text("model: [unclosed\n")
    assert "is not valid YAML" in error_of(capsys, ["--resume", str(run), "--no-progress"])
    (run / "config.yml").write_text("- a\n- list\n")
    assert "is not a finetune run's config" in error_of(capsys, ["--resume", str(run), "--no-progress"])


def test_unwritable_output(never_trains, tmp_path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    err = error_of(capsys, ["--w-bits", "4", "--a-bits", "4", *TINY, "--output", str(blocker / "run")], code=1)
    assert "cannot create run folder" in err
