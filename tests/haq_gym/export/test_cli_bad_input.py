"""``python -m haq_gym.export``: --out is never overwritten silently, bad input fails before the 20-30 s setup."""

from __future__ import annotations

import dataclasses
import os

import pytest

import haq_gym.export.source as source_module
from haq_gym.export.build import export_integer_model
from haq_gym.export.cli import main
from haq_gym.export.packed_file import PackedFileError, load_integer_model, write_packed_file
from haq_gym.policy import PolicyFile, uniform_bits


@pytest.fixture
def no_setup(monkeypatch):
    """Fail the test if the model and data would be set up (the slow part of an export)."""

    def refuse(*args, **kwargs):
        raise AssertionError("set up before the input was validated")

    monkeypatch.setattr(source_module.QuantizedModel, "from_float", refuse)
    monkeypatch.setattr(source_module.QuantizedModel, "from_checkpoint", refuse)
    monkeypatch.setattr(source_module, "load_dataset", refuse)


def error_of(capsys, argv, code: int = 2) -> str:
    assert main(argv) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_existing_out_is_refused_unless_overwrite(no_setup, tmp_path, capsys) -> None:
    out = tmp_path / "model.hqpk"
    out.write_bytes(b"an earlier export")
    err = error_of(capsys, ["export", "--uniform", "4", "4", "--out", str(out)])
    assert "already exists; pass --overwrite to replace it" in err
    assert out.read_bytes() == b"an earlier export"


def test_overwrite_replaces_the_file(tmp_path, tiny_checkpoint, capsys) -> None:
    out = tmp_path / "model.hqpk"
    out.write_bytes(b"an earlier export")
    argv = [
        "export",
        "--uniform",
        "4",
        "4",
        "--width-mult",
        "0.35",
        "--float-checkpoint",
        tiny_checkpoint,
        "--out",
        str(out),
        "--no-eval",
        "--threads",
        "1",
        "--calibration-size",
        "16",
    ]
    assert main(argv + ["--overwrite"]) == 0
    assert load_integer_model(out).layers


@pytest.mark.parametrize(
    "flags,expected",
    [
        (["--uniform", "9", "4"], "--uniform W_BIT must be an integer in [2, 8], got 9"),
        (["--uniform", "4", "1"], "--uniform A_BIT must be an integer in [2, 8], got 1"),
        (["--uniform", "4", "4", "--width-mult", "0"], "--width-mult must be a finite number in (0, 4], got 0"),
        (["--uniform", "4", "4", "--calibration-size", "0"], "--calibration-size must be an integer >= 1, got 0"),
    ],
)
def test_bad_flags_before_setup(no_setup, tmp_path, capsys, flags, expected) -> None:
    assert expected in error_of(capsys, ["export", *flags, "--out", str(tmp_path / "x.hqpk")])
    assert not (tmp_path / "x.hqpk").exists()


def test_policy_for_another_model_is_refused_before_setup(no_setup, tmp_path, capsys) -> None:
    policy = tmp_path / "policy.json"
    PolicyFile("resnet20", "digits", ["only", "two"], uniform_bits(2, 4, 4)).save(policy)
    assert "policy has 2 layers but the model has 20" in error_of(
        capsys, ["export", "--policy", str(policy), "--out", str(tmp_path / "x.hqpk")]
    )


def test_unwritable_out_folder(no_setup, tmp_path, capsys) -> None:
    assert "does not exist or is not writable" in error_of(
        capsys, ["export", "--uniform", "4", "4", "--out", str(tmp_path / "missing" / "x.hqpk")], code=2
    )


def test_random_bytes_as_qat_checkpoint(tmp_path, capsys) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(1024))
    assert f"checkpoint is corrupt: {junk}" in error_of(
        capsys, ["export", "--checkpoint", str(junk), "--out", str(tmp_path / "x.hqpk")]
    )


@pytest.mark.parametrize("field,value", [("stride", 0), ("padding", -1), ("groups", 0), ("layer", 999)])
def test_crafted_packed_file_with_impossible_conv_is_refused(
    make_quantized, digits, tmp_path, capsys, field, value
) -> None:
    policy = [[8, -1]] + [[4, 4]] * 51 + [[8, 8]]
    model, named = make_quantized(policy)
    im = export_integer_model(model, named, digits["calib"])
    first_conv = next(i for i, op in enumerate(im.ops) if hasattr(op, "stride"))
    im.ops[first_conv] = dataclasses.replace(im.ops[first_conv], **{field: value})
    path = tmp_path / "crafted.hqpk"
    write_packed_file(path, im)  # a valid CRC: only the structural check can catch it
    with pytest.raises(PackedFileError, match=f"conv {field if field != 'layer' else 'layer index'} must be"):
        load_integer_model(path)
    assert "must be" in error_of(capsys, ["infer", str(path)])
