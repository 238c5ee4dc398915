"""Whole-file byte reads shared by the export formats (writes go through :func:`haq_gym.util.write_atomic`)."""

from __future__ import annotations

import os


def read_bytes(path: str | os.PathLike[str], what: str) -> bytes:
    """The bytes of ``path``; a missing file raises ``FileNotFoundError`` naming ``what`` it should have been."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path!r} does not exist") from None
