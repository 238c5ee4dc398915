"""Atomic file writes: a reader, or a crash mid-write, never sees half a file."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import IO


def write_atomic(
    path: str | os.PathLike[str], data: bytes | str | Callable[[IO[bytes]], object], overwrite: bool = True
) -> None:
    """Replace ``path`` with ``data`` through a temporary file in the same folder and a rename.

    ``data`` is bytes, text (written as UTF-8) or a function that writes into the open
    binary file (``lambda fh: torch.save(obj, fh)``). The file is flushed to disk before
    the rename; if anything fails, the temporary file is removed and ``path`` keeps its
    previous content. The folder must exist. With ``overwrite=False`` the file is published
    with a hard link, which fails with ``FileExistsError`` if ``path`` exists (also when
    another process created it a moment ago).
    """
    path = os.fspath(path)
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            if isinstance(data, str):
                fh.write(data.encode("utf-8"))
            elif isinstance(data, (bytes, bytearray, memoryview)):
                fh.write(data)
            else:
                data(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise FileExistsError(f"{path!r} already exists; pass --overwrite to replace it") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
