"""Creating run folders without ever overwriting an earlier run."""

from __future__ import annotations

import os
from pathlib import Path


def prepare_run_folder(output: str | os.PathLike | None, default_name: str, root: str | os.PathLike = "runs") -> Path:
    """Create and return an empty run folder.

    An explicit ``output`` must not exist or be empty (an earlier run is never mixed
    with or overwritten); without one, ``root/default_name`` is used, with ``_2``,
    ``_3``... appended if taken.
    """
    if output is not None:
        path = Path(output)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise FileExistsError(f"run folder {os.fspath(path)!r} already exists and is not empty; "
                                  "choose another --output (nothing was written)")
        path.mkdir(parents=True, exist_ok=True)
        return path
    base = Path(root) / default_name
    path, n = base, 1
    while True:
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            n += 1
            path = base.with_name(f"{base.name}_{n}")
