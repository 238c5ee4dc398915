"""Float checkpoints: saving, validated loading, and the cached default model.

Checkpoints are ``{"state_dict": ..., "meta": {...}, "checksum": {...}}`` files written with
``torch.save`` and read with ``torch.load(weights_only=True)``, so loading never runs pickled
code; the tensors' checksum (:mod:`haq_gym.integrity`) is verified on every load. A plain
state dict is accepted too.

The default model of a (model, width, dataset) triple is trained on first use and cached
in ``$HAQ_GYM_CACHE`` (default: ``$XDG_CACHE_HOME/haq_gym``, else ``~/.cache/haq_gym``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from haq_gym.integrity import CheckpointCorrupt, load_verified, seal
from haq_gym.models.pretrain import FloatRecipe, train_float

if TYPE_CHECKING:
    from haq_gym.data import DataBundle
from haq_gym.util import write_atomic

DEFAULT_MIN_ACCURACY = 95.0
"""Test top-1 (%) the default digits model must reach (the search is meaningless on a weak model)."""


def cache_dir() -> Path:
    """Where default checkpoints (and other reusable artifacts) are cached."""
    env = os.environ.get("HAQ_GYM_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "haq_gym"


def save_checkpoint(path: str | os.PathLike[str], model: nn.Module, meta: dict[str, Any]) -> None:
    """Write ``model``'s float state dict and ``meta`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    write_atomic(path, lambda fh: torch.save(seal({"state_dict": state, "meta": meta}), fh))


def read_torch_file(path: str | os.PathLike[str]) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU with the tensors' checksum verified.

    ``FileNotFoundError`` for a missing file, :class:`~haq_gym.integrity.CheckpointCorrupt`
    (a ``ValueError``: "checkpoint is corrupt: <path> (...)") for damaged bytes, a checksum
    mismatch or NaN/infinite weights.
    """
    return load_verified(path)


def load_checkpoint(path: str | os.PathLike[str], model: nn.Module) -> dict[str, Any]:
    """Load a float checkpoint into ``model``; return its metadata.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file
    for a corrupt one or one whose tensors do not fit the model.
    """
    path = os.fspath(path)
    data = read_torch_file(path)
    if isinstance(data, dict) and "state_dict" in data:
        state, meta = data["state_dict"], dict(data.get("meta") or {})
    elif isinstance(data, dict):
        state, meta = data, {}
    else:
        raise ValueError(f"checkpoint {path!r} holds a {type(data).__name__}, expected a state dict")
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        details = []
        if missing:
            details.append(f"{len(missing)} missing keys (e.g. {missing[0]!r})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]!r})")
        if wrong:
            k = wrong[0]
            details.append(
                f"{len(wrong)} shape mismatches (e.g. {k!r}: "
                f"checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)})"
            )
        raise ValueError(f"checkpoint {path!r} does not fit this model ({type(model).__name__}): " + "; ".join(details))
    model.load_state_dict(state)
    return meta


def default_checkpoint_path(model_name: str, width_mult: float, dataset: str, recipe: FloatRecipe, seed: int) -> Path:
    """Cache path of the default float model; the recipe is part of the name, so changing it retrains."""
    digest = hashlib.sha1(json.dumps(recipe.to_dict(), sort_keys=True).encode()).hexdigest()[:8]
    return cache_dir() / f"{model_name}-w{width_mult:g}-{dataset}-float-seed{seed}-{digest}.pt"


def ensure_default_checkpoint(
    model_name: str,
    width_mult: float,
    dataset: str,
    model: nn.Module,
    bundle: DataBundle,
    recipe: FloatRecipe | None = None,
    seed: int = 0,
    progress: bool = True,
    min_accuracy: float | None = DEFAULT_MIN_ACCURACY,
    device: torch.device | str = "cpu",
) -> tuple[Path, dict[str, Any]]:
    """Load the cached default float model into ``model``, training and caching it first if needed.

    A cached file that fails its checksum (or cannot be read) is renamed ``*.corrupt`` and
    the model is trained again.

    ``model`` is re-initialised from ``seed`` before training, which runs on ``device``
    (the env's or the command's: a GPU user's first run trains there). Returns the checkpoint path
    and its metadata (which holds the test accuracy). A model below ``min_accuracy`` test
    top-1 is not cached and raises: every search on a weak model would be meaningless.
    """
    recipe = recipe or FloatRecipe()
    path = default_checkpoint_path(model_name, width_mult, dataset, recipe, seed)
    if path.exists():
        with contextlib.suppress(CheckpointCorrupt):
            return path, load_checkpoint(path, model)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(path.with_name(path.name + ".lock")):
        if path.exists():  # another process trained it while this one waited, or the cached file is corrupt
            try:
                return path, load_checkpoint(path, model)
            except CheckpointCorrupt as err:
                print(f"{err}; training the default model again", flush=True)
                aside = path.with_name(path.name + ".corrupt")
                os.replace(path, aside)  # kept for inspection, never loaded again
        return path, _train_and_cache(
            path, model_name, width_mult, dataset, model, bundle, recipe, seed, progress, min_accuracy, device
        )


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path``: concurrent first runs train the default model once.

    The others wait (with a message) and then load what the first one cached. Where ``fcntl`` does
    not exist (Windows) there is no lock.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(lock_path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another process that is training the default model ({lock_path})", flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _train_and_cache(
    path: Path,
    model_name: str,
    width_mult: float,
    dataset: str,
    model: nn.Module,
    bundle: DataBundle,
    recipe: FloatRecipe,
    seed: int,
    progress: bool,
    min_accuracy: float | None,
    device: torch.device | str,
) -> dict[str, Any]:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for m in model.modules():
            reset = getattr(m, "reset_parameters", None)
            if callable(reset):
                reset()
        test_acc = train_float(model, bundle, recipe, seed=seed, device=device, progress=progress)
    model.to("cpu")
    meta = {
        "model": model_name,
        "width_mult": width_mult,
        "dataset": dataset,
        "seed": seed,
        "recipe": recipe.to_dict(),
        "test_top1": test_acc,
        "trained_on": str(torch.device(device)),
    }
    if min_accuracy is not None and test_acc < min_accuracy:
        raise RuntimeError(
            f"default {model_name} reached only {test_acc:.2f}% test top-1 on {dataset} "
            f"(needs {min_accuracy}%); not caching it"
        )
    save_checkpoint(path, model, meta)
    return meta
