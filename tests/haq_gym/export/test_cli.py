"""``python -m haq_gym.export``: export from a policy or a QAT checkpoint, inference from the file, errors."""

from __future__ import annotations

import re

import pytest

from haq_gym.export.cli import main
from haq_gym.export.packed_file import read_packed_file
from haq_gym.models import build_model
from haq_gym.policy import PolicyFile
from haq_gym.quant import wrap_model

LAYERS = 53


@pytest.fixture(scope="module")
def layer_names() -> list[str]:
    return [n for n, _ in wrap_model(build_model("mobilenetv2", num_classes=10, width_mult=0.35))]


def test_export_a_policy_then_run_the_file(tmp_path, tiny_checkpoint, layer_names, capsys) -> None:
    bits = [[8, -1]] + [[3 + i % 4, 8 - i % 5] for i in range(LAYERS - 2)] + [[8, 8]]
    policy = tmp_path / "best_policy.json"
    PolicyFile("mobilenetv2", "digits", layer_names, bits, model_kwargs={"width_mult": 0.35}).save(policy)
    out = tmp_path / "model.hqpk"
    assert (
        main(
            [
                "export",
                "--policy",
                str(policy),
                "--float-checkpoint",
                tiny_checkpoint,
                "--out",
                str(out),
                "--threads",
                "2",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    sizes = read_packed_file(out).sizes
    flash_bytes = (
        sum(
            m.weight.numel() * w
            for (_, m), (w, _) in zip(
                wrap_model(build_model("mobilenetv2", num_classes=10, width_mult=0.35)), bits, strict=True
            )
        )
        + 7
    ) // 8
    assert sizes.weights == flash_bytes
    assert f"header + packed weights = {sizes.flash:,} bytes, +{sizes.header:,} bytes from the cost model" in text
    match = re.search(
        r"integer top-1 ([\d.]+)%, fake-quant top-1 ([\d.]+)% \(on cpu\), "
        r"identical predictions (\d+)/360",
        text,
    )
    assert match, text
    assert int(match[3]) >= 356 and abs(float(match[1]) - float(match[2])) <= 1.2
    assert "integer-only ops checked" in text


def test_export_a_qat_checkpoint(tmp_path, tiny_checkpoint, layer_names, capsys) -> None:
    import torch

    from haq_gym.data import load_dataset, materialize
    from haq_gym.finetune import checkpoint
    from haq_gym.models import load_checkpoint
    from haq_gym.quant import calibrate

    bits = [[8, -1]] + [[4, 4]] * (LAYERS - 2) + [[8, 8]]
    policy = PolicyFile("mobilenetv2", "digits", layer_names, bits, model_kwargs={"width_mult": 0.35})
    model = build_model("mobilenetv2", num_classes=10, width_mult=0.35)
    load_checkpoint(tiny_checkpoint, model)
    named = checkpoint.quantize_model(model, policy, "lsq")
    images = materialize(load_dataset("digits", None).search_train)[0][:16]
    calibrate(model, [m for _, m in named], images)
    with torch.no_grad():
        model.eval()(images)  # weight steps initialise on first use
    path = tmp_path / "qat.pt"
    checkpoint.save_qat_checkpoint(
        path, model, policy, "lsq", {"model": "mobilenetv2", "width_mult": 0.35, "num_classes": 10, "dataset": "digits"}
    )
    out = tmp_path / "qat.hqpk"
    assert main(["export", "--checkpoint", str(path), "--out", str(out), "--no-eval", "--threads", "2"]) == 0
    assert "QAT checkpoint" in capsys.readouterr().out
    assert len(read_packed_file(out).layers) == LAYERS


def test_errors_are_reported_not_raised(tmp_path, capsys) -> None:
    assert main(["export", "--checkpoint", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "x.hqpk")]) == 2
    assert "does not exist" in capsys.readouterr().err
    broken = tmp_path / "broken.hqpk"
    broken.write_bytes(b"HQPK" + bytes(30))
    assert main(["infer", str(broken)]) == 2
    assert "error:" in capsys.readouterr().err


def test_cuda_without_a_gpu_is_a_clear_error(tmp_path, capsys) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device; the error path is for machines without one")
    assert main(["export", "--uniform", "4", "4", "--out", str(tmp_path / "x.hqpk"), "--device", "cuda"]) == 2
    assert "sees no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "x.hqpk").exists()
    assert main(["export", "--uniform", "4", "4", "--out", str(tmp_path / "x.hqpk"), "--device", "tpu"]) == 2
    assert "device must be cpu, cuda" in capsys.readouterr().err


def test_onnx_export_writes_into_the_run_folder_and_matches(tmp_path, tiny_checkpoint, layer_names, capsys) -> None:
    pytest.importorskip("onnxruntime")
    bits = [[8, -1]] + [[2 + i % 7, 8 - i % 6] for i in range(LAYERS - 2)] + [[8, 8]]
    run = tmp_path / "run"
    run.mkdir()
    PolicyFile("mobilenetv2", "digits", layer_names, bits, model_kwargs={"width_mult": 0.35}).save(
        run / "best_policy.json"
    )
    assert (
        main(
            ["onnx", "--policy", str(run / "best_policy.json"), "--float-checkpoint", tiny_checkpoint, "--threads", "2"]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert (run / "model.onnx").exists() and "onnx.checker passed" in text
    match = re.search(r"onnxruntime top-1 ([\d.]+)%, fake-quant top-1 ([\d.]+)%, identical predictions (\d+)/360", text)
    assert match, text
    assert int(match[3]) >= 358 and abs(float(match[1]) - float(match[2])) <= 0.6
    assert main(["infer", str(run / "model.onnx"), "--threads", "2"]) == 0
    assert f"onnxruntime top-1 {match[1]}%" in capsys.readouterr().out


def test_unsupported_model_is_refused_before_any_work(tmp_path, capsys, monkeypatch) -> None:
    # Every registered network exports now; a registered name outside the supported list stands in.
    import haq_gym.export.cli as cli

    monkeypatch.setattr(cli, "SUPPORTED_INTEGER_MODELS", ("mobilenetv2", "resnet20", "resnet18"))
    out = tmp_path / "v3.hqpk"
    assert main(["export", "--uniform", "4", "4", "--model", "mobilenetv3small", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "does not support 'mobilenetv3small'; supported: mobilenetv2, resnet20, resnet18" in err
    assert not out.exists()
    assert main(["export", "--uniform", "4", "4"]) == 2
    assert "--out is needed with --uniform" in capsys.readouterr().err


def test_accuracy_line_names_the_recorded_accuracy_and_the_input_quantization() -> None:
    from types import SimpleNamespace

    from haq_gym.export.cli import accuracy_line

    source = SimpleNamespace(meta={"test_top1": 98.0555, "epoch": 3})
    line = accuracy_line(source, {"fake_quant_float_input_top1": 98.0555, "integer_top1": 97.2222})
    assert line == (
        "accuracy: finetune's test top-1 98.06% (best.pt, epoch 3, chosen on validation), here 98.06%; "
        "the integer model quantizes the input image to 8 bits, the one change: 97.22% (-0.83 points)"
    )
    assert "\n" not in accuracy_line(
        SimpleNamespace(meta={}), {"fake_quant_float_input_top1": 50.0, "integer_top1": 50.0}
    )
