"""The measured latency table: a tiny real measurement, the CLI's .npy + .json, and loading tables into envs."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

import haq_gym  # noqa: F401
from haq_gym.cost.latency_measurement import fill_from_nearest, main, measure_latency_table
from haq_gym.models import build_model, save_checkpoint
from haq_gym.quant import wrap_model


def test_tiny_measurement_fills_only_what_was_asked() -> None:
    model = build_model("mobilenetv2", 10, width_mult=0.35)
    layers = wrap_model(model)
    table = measure_latency_table(
        model, layers, 32, bit_pairs=[(2, 2), (8, 8)], layer_indices=[1, 52], repeats=2, warmup=1
    )
    assert table.shape == (53, 8, 8)
    measured = np.isfinite(table)
    assert measured.sum() == 4 and measured[1, 1, 1] and measured[1, 7, 7] and measured[52, 7, 7]
    assert np.all(table[measured] > 0)
    with pytest.raises(ValueError, match=r"outside 1\.\.8"):
        measure_latency_table(model, layers, 32, bit_pairs=[(0, 8)], layer_indices=[0], repeats=1)
    with pytest.raises(ValueError, match="not available"):
        measure_latency_table(model, layers, 32, bit_pairs=[(8, 8)], layer_indices=[0], repeats=1, engine="tpu")


def test_fill_from_nearest() -> None:
    raw = np.full((1, 8, 8), np.nan)
    raw[0, 1, 1], raw[0, 1, 7], raw[0, 7, 1], raw[0, 7, 7] = 1.0, 2.0, 3.0, 4.0
    full = fill_from_nearest(raw, [2, 8])
    assert np.isfinite(full).all()
    assert full[0, 0, 0] == 1.0 and full[0, 4, 4] == 4.0 and full[0, 2, 6] == 2.0 and full[0, 6, 0] == 3.0


def test_cli_writes_table_and_description_that_an_env_loads(tmp_path) -> None:
    out = tmp_path / "r20.npy"
    assert (
        main(
            [
                "--model",
                "resnet20",
                "--width-mult",
                "0.25",
                "--output",
                str(out),
                "--bits",
                "2",
                "8",
                "--repeats",
                "2",
                "--warmup",
                "1",
                "--seed",
                "0",
                "--no-progress",
            ]
        )
        == 0
    )
    table = np.load(out)
    assert table.shape == (20, 8, 8) and np.isfinite(table).all() and (table > 0).all()
    meta = json.loads(out.with_suffix(".json").read_text())
    for key in (
        "machine",
        "torch",
        "engine",
        "batch_size",
        "repeats",
        "warmup",
        "how",
        "measured_bits",
        "bit_sensitivity",
        "build_time_s",
        "layers",
    ):
        assert key in meta
    assert meta["torch"] == torch.__version__ and meta["repeats"] == 2 and len(meta["layers"]) == 20
    assert out.with_suffix(".png").stat().st_size > 0  # the heat maps beside the table
    torch.manual_seed(0)
    ckpt = tmp_path / "r20.pt"
    save_checkpoint(ckpt, build_model("resnet20", 10, width_mult=0.25), {})
    # A CPU table barely depends on the bit widths, so a latency budget well below 1 is usually infeasible: use flash.
    env = gym.make(
        "HAQ-ResNet20-v0",
        width_mult=0.25,
        checkpoint=str(ckpt),
        val_size=16,
        calibration_size=8,
        latency_table=str(out),
        latency_budget=None,
        flash_budget=0.5,
        progress=False,
    )
    assert np.array_equal(env.unwrapped.setup.cost_model.table, table)
    assert env.unwrapped.setup.latency_source == str(out)
    assert main(["--model", "resnet20", "--output", str(tmp_path / "t.txt")]) == 2


def test_haq_shaped_table_loads_into_mobilenetv2_and_wrong_shapes_name_the_expected_one(
    tiny_env_kwargs, tmp_path
) -> None:
    # HAQ's shipped table: int64 cycles, shape (53, 8, 8), growing with w_bit * a_bit; this one is made up alike.
    per_layer = np.random.default_rng(0).integers(3_184, 75_000, size=53)
    haq_like = (per_layer[:, None, None] * np.outer(np.arange(1, 9), np.arange(1, 9))[None]).astype(np.int64)
    path = tmp_path / "qmobilenetv2_imagenet100_batch16_latency_table.npy"
    np.save(path, haq_like)
    env = gym.make("HAQ-MobileNetV2-v0", **tiny_env_kwargs, latency_table=str(path))
    assert np.array_equal(env.unwrapped.setup.cost_model.table, haq_like.astype(np.float64))
    torch.manual_seed(0)
    ckpt = tmp_path / "r20.pt"
    save_checkpoint(ckpt, build_model("resnet20", 10, width_mult=0.25), {})
    with pytest.raises(ValueError, match=r"\(53, 8, 8\); expected \(20, 8, 8\)"):
        gym.make(
            "HAQ-ResNet20-v0",
            **{**tiny_env_kwargs, "width_mult": 0.25, "checkpoint": str(ckpt)},
            latency_table=str(path),
        )
    with pytest.raises(ValueError, match=r"\(53, 8, 8\); expected \(20, 8, 8\)"):
        gym.make(
            "HAQ-KMeans-ResNet20-v0",
            width_mult=0.25,
            checkpoint=str(ckpt),
            val_size=16,
            progress=False,
            latency_table=str(path),
        )


def test_cli_measures_a_torchvision_model_at_its_input_size(tmp_path) -> None:
    out = tmp_path / "mnv2.npy"
    assert (
        main(
            [
                "--model",
                "torchvision:mobilenet_v2",
                "--model-kwargs",
                "{width_mult: 0.25}",
                "--image-size",
                "64",
                "--output",
                str(out),
                "--bits",
                "8",
                "--repeats",
                "1",
                "--warmup",
                "0",
            ]
        )
        == 0
    )
    table = np.load(out)
    assert table.shape == (53, 8, 8) and np.all(table > 0)
    description = json.loads(out.with_suffix(".json").read_text())
    assert description["model_kwargs"] == {"width_mult": 0.25} and description["layers"][-1] == "classifier.1"
    assert main(["--model", "no_such_pkg:build", "--output", str(tmp_path / "x.npy")]) == 2
