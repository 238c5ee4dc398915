"""Whole-file byte I/O shared by the export formats: atomic writes, reads that name a missing file."""

from __future__ import annotations

import os


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename, so a crash never leaves half a file."""
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_bytes(path: str | os.PathLike, what: str) -> bytes:
    """The bytes of ``path``; a missing file raises ``FileNotFoundError`` naming ``what`` it should have been."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path!r} does not exist") from None
