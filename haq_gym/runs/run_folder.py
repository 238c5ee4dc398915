"""Creating run folders without ever overwriting an earlier run, or sharing one with a concurrent run.

A folder is claimed by creating ``.claim`` in it with ``O_CREAT | O_EXCL``: of two
processes given the same empty (or new) folder at the same moment, exactly one creates
the file and the other is refused, so two runs never interleave their files. The claim
stays in the folder (it records who wrote it) and is what makes it "not empty" afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import IO

CLAIM_NAME = ".claim"


def claim_folder(path: str | os.PathLike[str], what: str = "run folder", flag: str = "--output") -> Path:
    """Create ``path`` if needed and claim it atomically; raise ``FileExistsError`` if it holds anything.

    Also refused: a file at ``path``, and a folder another process claimed a moment ago
    (its ``.claim`` exists). ``PermissionError``/``OSError`` of an unwritable location are
    re-raised as ``OSError`` naming the folder.
    """
    path = Path(path)
    taken = _taken(path, what, flag)
    check_free(path, what, flag)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path / CLAIM_NAME, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        raise taken from None
    except OSError as err:
        raise OSError(f"cannot create {what} {os.fspath(path)!r}: {err.strerror or err}") from None
    with os.fdopen(fd, "w") as fh:
        json.dump(
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "time": time.time(),
                "argv": [os.path.basename(sys.argv[0])] if sys.argv else [],
            },
            fh,
        )
    if any(p.name != CLAIM_NAME for p in path.iterdir()):  # something arrived between the check and the claim
        (path / CLAIM_NAME).unlink()
        raise taken
    return path


def _taken(path: Path, what: str, flag: str) -> FileExistsError:
    return FileExistsError(
        f"{what} {os.fspath(path)!r} already exists and is not empty; choose another {flag} (nothing was written)"
    )


def check_free(path: str | os.PathLike[str], what: str = "run folder", flag: str = "--output") -> None:
    """Raise ``FileExistsError`` now if ``path`` could not be claimed (call before expensive work; claim later)."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise _taken(path, what, flag)


def release_unused(path: str | os.PathLike[str]) -> bool:
    """Remove a claimed folder again if it holds nothing but its claim (a run refused before writing)."""
    path = Path(path)
    if path.is_dir() and all(p.name == CLAIM_NAME for p in path.iterdir()):
        shutil.rmtree(path, ignore_errors=True)
        return True
    return False


def prepare_run_folder(
    output: str | os.PathLike[str] | None, default_name: str, root: str | os.PathLike[str] = "runs"
) -> Path:
    """Create, claim and return an empty run folder.

    An explicit ``output`` must not exist or be empty (an earlier run is never mixed
    with or overwritten, and of two runs started on it together one is refused); without
    one, ``root/default_name`` is used, with ``_2``, ``_3``... appended if taken.
    """
    if output is not None:
        return claim_folder(output)
    base = Path(root) / default_name
    path, n = base, 1
    while True:
        try:
            return claim_folder(path)
        except FileExistsError:
            n += 1
            path = base.with_name(f"{base.name}_{n}")


def point_latest(run_dir: str | os.PathLike[str], name: str = "latest") -> Path | None:
    """Make ``<run_dir's parent>/latest`` a symbolic link to ``run_dir``, replaced atomically.

    Returns the link, or None (nothing changed) where ``latest`` is a real file or folder of
    the user's or links cannot be made there.
    """
    run_dir = Path(run_dir)
    link = run_dir.parent / name
    if link.exists() and not link.is_symlink():
        return None
    tmp = run_dir.parent / f".{name}.{os.getpid()}.tmp"
    try:
        tmp.unlink(missing_ok=True)
        os.symlink(run_dir.name, tmp)
        os.replace(tmp, link)
    except OSError:
        tmp.unlink(missing_ok=True)
        return None
    return link


LOCK_NAME = ".lock"


def lock_folder(path: str | os.PathLike[str], what: str = "output folder") -> IO[str]:
    """Hold an exclusive ``flock`` on ``path/.lock`` while the returned handle stays open.

    For folders that are continued (``--resume``): a second process resuming the same
    folder is refused with ``FileExistsError`` instead of running the same jobs twice. The
    lock goes with the process (also on ``kill -9``). Where ``fcntl`` does not exist
    (Windows) nothing is locked.
    """
    handle = open(Path(path) / LOCK_NAME, "a")  # noqa: SIM115 - returned open: the lock lasts while the caller holds it
    try:
        import fcntl
    except ImportError:
        return handle
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise FileExistsError(
            f"{what} {os.fspath(path)!r} is in use by another process; wait for it to finish or choose another --output"
        ) from None
    return handle
