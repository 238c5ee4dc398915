"""Checksums of the tensors in the project's checkpoints: a flipped bit or a NaN is caught on load.

``torch.load`` does not check the data of a checkpoint: a bit flipped on disk or in a
copy loads silently and changes the model. Every checkpoint the project writes (float
models, QAT checkpoints with their training state, HAQ-DDPG agents) is a dict; before it
is saved, :func:`seal` adds ``"checksum": {"algorithm": "sha256", "tensors": HEX}``, the
SHA-256 of every tensor in the payload (its key path, dtype, shape and bytes, in a fixed
order). :func:`verify` recomputes it after loading and raises :class:`CheckpointCorrupt`
("checkpoint is corrupt: <path> (...)") on a mismatch, and also when a floating-point
tensor holds NaN or infinity. Files written before checksums existed have none and are
accepted (:func:`verify` returns False for them).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from typing import Any

import torch

CHECKSUM_KEY = "checksum"
ALGORITHM = "sha256"


class CheckpointCorrupt(ValueError):
    """A checkpoint whose bytes are damaged or whose tensors fail their checksum."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fspath(path)
        super().__init__(f"checkpoint is corrupt: {self.path} ({reason})")


def _tensors(obj: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """``(key path, tensor)`` for every tensor inside nested dicts, lists and tuples, in a fixed order."""
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for key in sorted(obj, key=str):
            if not (prefix == "" and key == CHECKSUM_KEY):
                yield from _tensors(obj[key], f"{prefix}/{key}")
    elif isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            yield from _tensors(item, f"{prefix}/{i}")


def tensor_checksum(payload: Any) -> str:
    """SHA-256 (hex) over every tensor of ``payload``: key path, dtype, shape and raw bytes."""
    digest = hashlib.new(ALGORITHM)
    for path, tensor in _tensors(payload):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{path}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def seal(payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` with its tensor checksum added (call right before ``torch.save``)."""
    return {**payload, CHECKSUM_KEY: {"algorithm": ALGORITHM, "tensors": tensor_checksum(payload)}}


def verify(payload: Any, path: str | os.PathLike[str]) -> bool:
    """Raise :class:`CheckpointCorrupt` unless the checksum matches and every float tensor is finite.

    Returns True when a checksum was checked, False for a file written without one.
    """
    for key, tensor in _tensors(payload):
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointCorrupt(path, f"tensor {key.lstrip('/')} holds NaN or infinite values")
    record = payload.get(CHECKSUM_KEY) if isinstance(payload, dict) else None
    if record is None:
        return False
    if (
        not isinstance(record, dict)
        or record.get("algorithm") != ALGORITHM
        or not isinstance(record.get("tensors"), str)
    ):
        raise CheckpointCorrupt(path, f"unreadable checksum record {record!r}")
    if tensor_checksum(payload) != record["tensors"]:
        raise CheckpointCorrupt(path, "the tensors do not match the checksum written with them")
    return True


def load_verified(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` then :func:`verify`; unreadable bytes are :class:`CheckpointCorrupt`.

    ``FileNotFoundError`` names a missing file.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except (OSError, MemoryError):
        raise
    except Exception as err:  # noqa: BLE001 - torch raises many types (RuntimeError, UnpicklingError, IndexError...) for bad bytes
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointCorrupt(path, f"not a readable torch checkpoint: {reason[:200]}") from None
    verify(data, path)
    return data


__all__ = ["CheckpointCorrupt", "load_verified", "seal", "tensor_checksum", "verify"]
