"""Shared fixtures: an isolated cache directory and a tiny, fast search problem."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import haq_gym  # noqa: F401  (registers the env ids)
from haq_gym.models import build_model, save_checkpoint


@pytest.fixture(autouse=True, scope="session")
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Never read or write the user's cache from tests."""
    path = tmp_path_factory.mktemp("haq_gym_cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("HAQ_GYM_CACHE", str(path))
    yield path
    mp.undo()


@pytest.fixture(autouse=True)
def two_threads() -> None:
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A randomly initialised (seeded) MobileNetV2 at width 0.35: fast, and enough to exercise the mechanics."""
    torch.manual_seed(0)
    model = build_model("mobilenetv2", num_classes=10, width_mult=0.35)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, model, {"note": "random init for tests"})
    return str(path)


@pytest.fixture(scope="session")
def tiny_env_kwargs(tiny_checkpoint: str) -> dict:
    """``gym.make`` keywords of a small, fast problem (random-init model, 64 validation images)."""
    return {
        "width_mult": 0.35,
        "checkpoint": tiny_checkpoint,
        "val_size": 64,
        "calibration_size": 16,
        "progress": False,
    }
