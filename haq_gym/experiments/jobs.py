"""Run many haq-gym commands at once, each in its own process and run folder, resumably.

A benchmark is a list of :class:`Job` objects: a command line and the run folder it
writes. :func:`run_jobs` runs them on a pool of worker processes that together use the
machine's cores once (each gets ``HAQ_GYM_THREADS = cores // workers``) and the given
device. A job is finished when its folder holds ``job.json`` (written after the command
exits with 0) and is then always reused; with ``resume=True`` an unfinished folder (a
killed or failed run) is renamed aside, never deleted, and the job runs again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from haq_gym.util import write_atomic

DONE_FILE = "job.json"


@dataclass(frozen=True)
class Job:
    """One command that writes ``folder``; ``args`` are passed to ``python`` (e.g. ``["-m", "train_agent", ...]``).

    The command must create ``folder`` itself (haq-gym commands refuse a non-empty one),
    so ``args`` name it and the runner only keeps the log beside it.
    """

    name: str
    folder: Path
    args: tuple[str, ...]
    meta: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class JobResult:
    job: Job
    ok: bool
    seconds: float
    log: Path
    reused: bool = False


def is_done(job: Job) -> bool:
    return (job.folder / DONE_FILE).is_file()


def set_aside(folder: Path) -> Path | None:
    """Rename an unfinished run folder (and its log) to ``<name>.unfinished-<k>``; returns the new path."""
    if not folder.exists():
        return None
    k = 1
    while folder.with_name(f"{folder.name}.unfinished-{k}").exists():
        k += 1
    target = folder.with_name(f"{folder.name}.unfinished-{k}")
    folder.rename(target)
    log = log_path(folder)
    if log.exists():
        log.rename(target.with_name(target.name + ".log"))
    return target


def log_path(folder: Path) -> Path:
    return folder.with_name(folder.name + ".log")


def threads_per_worker(workers: int) -> int:
    """Cores of this process divided among ``workers`` (at least 1 each)."""
    return max(1, len(os.sched_getaffinity(0)) // max(1, workers))


def _run_one(job: Job, threads: int) -> JobResult:
    log = log_path(job.folder)
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HAQ_GYM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    start = time.perf_counter()
    with open(log, "w") as fh:
        fh.write(f"$ {sys.executable} {' '.join(job.args)}\n")
        fh.flush()
        code = subprocess.call([sys.executable, *job.args], stdout=fh, stderr=subprocess.STDOUT, env=env,
                               stdin=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    ok = code == 0 and job.folder.is_dir()
    if ok:
        record = {"name": job.name, "args": list(job.args), "seconds": round(seconds, 2), "meta": job.meta}
        write_atomic(job.folder / DONE_FILE, json.dumps(record, indent=1))
    return JobResult(job, ok, seconds, log)


def run_jobs(jobs: Sequence[Job], workers: int, resume: bool, desc: str, progress: bool = True) -> list[JobResult]:
    """Run ``jobs`` on ``workers`` processes; finished ones are reused.

    Returns one result per job, in the order given. A failed job is reported (with its log
    path) and does not stop the others. An unfinished folder is set aside with ``resume``
    and is an error raised before anything runs without it.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    results: dict[str, JobResult] = {}
    todo: list[Job] = []
    for job in jobs:
        if is_done(job):
            results[job.name] = JobResult(job, True, 0.0, log_path(job.folder), reused=True)
            continue
        if job.folder.exists():
            if not resume:
                raise FileExistsError(f"{job.folder} holds an unfinished run; pass --resume to set it aside and rerun")
            set_aside(job.folder)
        todo.append(job)
    threads = threads_per_worker(workers)
    bar = tqdm(total=len(todo), desc=desc, unit="run", disable=not progress or not todo)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_run_one, job, threads): job for job in todo}
        for future in as_completed(futures):
            result = future.result()
            results[result.job.name] = result
            status = f"done in {result.seconds:.0f} s" if result.ok else f"FAILED (log: {result.log})"
            bar.write(f"{desc}: {result.job.name} {status}")
            bar.update(1)
    bar.close()
    return [results[job.name] for job in jobs]
