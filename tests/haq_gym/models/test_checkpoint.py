"""Checkpoint saving/loading, the cache location and the default float model."""

from __future__ import annotations

import pytest
import torch

from haq_gym.data import load_dataset
from haq_gym.models import build_model, cache_dir, load_checkpoint, save_checkpoint
from haq_gym.models.checkpoint import DEFAULT_MIN_ACCURACY, default_checkpoint_path, ensure_default_checkpoint
from haq_gym.models.pretrain import FloatRecipe


def test_cache_dir_follows_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HAQ_GYM_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("HAQ_GYM_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "x" / "haq_gym"


def test_round_trip_and_errors(tmp_path) -> None:
    torch.manual_seed(0)
    a = build_model("mobilenetv2", 10, width_mult=0.35)
    path = tmp_path / "a.pt"
    save_checkpoint(path, a, {"test_top1": 12.5})
    b = build_model("mobilenetv2", 10, width_mult=0.35)
    assert load_checkpoint(path, b) == {"test_top1": 12.5}
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))

    with pytest.raises(ValueError, match=r"a\.pt.*does not fit.*shape mismatches"):
        load_checkpoint(path, build_model("mobilenetv2", 10, width_mult=0.5))
    with pytest.raises(ValueError, match=r"a\.pt.*missing keys|a\.pt.*shape"):
        load_checkpoint(path, build_model("mobilenetv2", 100, width_mult=0.35))
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"checkpoint is corrupt: .*corrupt\.pt \(not a readable torch checkpoint"):
        load_checkpoint(corrupt, b)
    with pytest.raises(FileNotFoundError, match=r"nope\.pt"):
        load_checkpoint(tmp_path / "nope.pt", b)


def test_default_checkpoint_is_trained_once_then_loaded(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HAQ_GYM_CACHE", str(tmp_path))
    bundle = load_dataset("digits")
    calls = []
    import haq_gym.models.checkpoint as ck

    real = ck.train_float

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(ck, "train_float", counting)
    recipe = FloatRecipe(epochs=1, batch_size=256)
    m1 = build_model("mobilenetv2", 10, width_mult=0.35)
    path, meta = ensure_default_checkpoint(
        "mobilenetv2", 0.35, "digits", m1, bundle, recipe=recipe, progress=False, min_accuracy=None
    )
    assert path == default_checkpoint_path("mobilenetv2", 0.35, "digits", recipe, 0) and path.exists()
    m2 = build_model("mobilenetv2", 10, width_mult=0.35)
    path2, meta2 = ensure_default_checkpoint(
        "mobilenetv2", 0.35, "digits", m2, bundle, recipe=recipe, progress=False, min_accuracy=None
    )
    assert len(calls) == 1 and path2 == path and meta2["test_top1"] == meta["test_top1"]
    with pytest.raises(RuntimeError, match="not caching"):
        ensure_default_checkpoint(
            "mobilenetv2",
            0.35,
            "digits",
            build_model("mobilenetv2", 10, width_mult=0.35),
            bundle,
            recipe=FloatRecipe(epochs=1, batch_size=512),
            progress=False,
            min_accuracy=DEFAULT_MIN_ACCURACY,
        )


def test_concurrent_first_runs_train_the_default_model_once(monkeypatch, tmp_path) -> None:
    """Two threads ask for the same uncached default model: one trains, the other waits and loads it."""
    import threading
    import time

    import haq_gym.models.checkpoint as ck

    monkeypatch.setenv("HAQ_GYM_CACHE", str(tmp_path))
    calls = []

    def slow_fake_training(model, bundle, recipe, seed, device="cpu", progress=True):
        calls.append(threading.current_thread().name)
        time.sleep(0.5)  # long enough for the other thread to reach the lock
        return 50.0

    monkeypatch.setattr(ck, "train_float", slow_fake_training)
    results = {}

    def first_run(name: str) -> None:
        model = build_model("mobilenetv2", 10, width_mult=0.35)
        results[name] = ensure_default_checkpoint(
            "mobilenetv2", 0.35, "digits", model, None, recipe=FloatRecipe(epochs=1), progress=False, min_accuracy=None
        )

    threads = [threading.Thread(target=first_run, args=(n,), name=n) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert results["a"][0] == results["b"][0] and results["a"][1]["test_top1"] == results["b"][1]["test_top1"] == 50.0
