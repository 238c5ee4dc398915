"""Run many haq-gym commands at once, each in its own process and run folder, resumably.

A benchmark grid is a list of :class:`Job` objects: a command line and the run folder it
writes. :func:`run_jobs` runs them

- on a pool of worker processes on this machine, placed by
  :func:`haq_gym.experiments.placement.plan_slots` (each worker on a device slot, with
  ``HAQ_GYM_THREADS = cores // workers`` so that the workers use the cores once), or
- as Ray tasks (``GridSettings.ray``), each asking for ``1 / workers_per_device`` of a GPU
  and ``cpus_per_run`` CPUs; see :mod:`haq_gym.experiments.ray_grid`.

A job is finished when its folder holds ``job.json`` (written after the command exits
with 0) and is then always reused; with ``resume=True`` an unfinished folder (a killed or
failed run) is renamed aside, never deleted, and the job runs again. A failed job (non-zero
exit, killed worker) is reported with its log path and does not stop the others.
"""

from __future__ import annotations

import argparse
import json
import queue
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from haq_gym.experiments.placement import Slot, plan_slots
from haq_gym.util import write_atomic

DONE_FILE = "job.json"


@dataclass(frozen=True)
class Job:
    """One command that writes ``folder``; ``args`` are passed to ``python`` (e.g. ``["-m", "train_agent", ...]``).

    The command must create ``folder`` itself (haq-gym commands refuse a non-empty one),
    so ``args`` name it and the runner only keeps the log beside it. ``device_flag``: the
    option (``--device``) the runner appends with the worker's device; None for a command
    that takes none. ``inputs``: files under the grid's folder the command reads (shipped
    to a Ray node along with the job).
    """

    name: str
    folder: Path
    args: tuple[str, ...]
    meta: dict[str, Any] = field(default_factory=dict, compare=False)
    device_flag: str | None = None
    inputs: tuple[Path, ...] = ()

    def command(self, device: str) -> list[str]:
        """The ``python`` arguments on ``device``."""
        return [*self.args, *([self.device_flag, device] if self.device_flag else [])]


@dataclass(frozen=True)
class JobResult:
    job: Job
    ok: bool
    seconds: float
    log: Path
    reused: bool = False
    error: str = ""
    device: str = ""


@dataclass(frozen=True)
class GridSettings:
    """How a grid runs: worker count and devices on this machine, or a Ray cluster.

    ``workers``: runs at once on this machine (None: one per device slot).
    ``devices``: ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (every GPU). ``workers_per_device``:
    workers sharing one device (a GPU's share ``1/k`` under Ray). ``ray``: None (local pool),
    ``auto`` (the Ray cluster this machine belongs to, else a new local Ray instance) or a
    cluster address. ``storage_dir``: with Ray, a folder every node sees where runs are
    written directly (then copied into the output); without it their folders are sent back.
    ``cpus_per_run``: CPUs (and threads) each Ray task asks for.
    """

    workers: int | None = 1
    devices: tuple[str, ...] = ("cpu",)
    workers_per_device: int | None = None
    ray: str | None = None
    storage_dir: str | None = None
    cpus_per_run: int = 1

    def __post_init__(self) -> None:
        if self.ray is None:
            if self.storage_dir is not None:
                raise ValueError("--storage-dir is the shared folder of a Ray cluster; it needs --ray")
            plan_slots(self.workers, self.devices, self.workers_per_device)  # raises for what the machine cannot hold
        else:
            if self.cpus_per_run < 1:
                raise ValueError(f"--cpus-per-run must be at least 1, got {self.cpus_per_run}")
            if self.workers_per_device is not None and self.workers_per_device < 1:
                raise ValueError(f"--workers-per-device must be at least 1, got {self.workers_per_device}")
            for name in self.devices:
                if name not in ("cpu", "cuda", "auto"):
                    raise ValueError(
                        f"with --ray, Ray picks the GPU of each run: --devices takes cpu, cuda or auto, got {name!r}"
                    )

    def slots(self) -> list[Slot]:
        """The local pool's worker slots."""
        return plan_slots(self.workers, self.devices, self.workers_per_device)

    def local_device(self) -> str:
        """The device for work the driver does itself (building the model before the grid): the first device."""
        if self.ray is not None:
            from haq_gym.experiments.placement import resolve_devices

            return resolve_devices(["auto"])[0] if set(self.devices) & {"cuda", "auto"} else "cpu"
        return self.slots()[0].device


def add_grid_arguments(parser: argparse.ArgumentParser) -> None:
    """The grid flags shared by the benchmark scripts (read back with :func:`grid_settings`)."""
    g = parser.add_argument_group(
        "parallel grid", "Where the runs go: worker processes on this machine, or a Ray cluster (docs/grid.md)."
    )
    g.add_argument(
        "--workers",
        type=int,
        default=None,
        help="runs at once on this machine (default: one per device slot; each gets cores/workers threads)",
    )
    g.add_argument(
        "--devices",
        "--device",
        nargs="+",
        default=["cpu"],
        metavar="DEVICE",
        help="cpu, cuda, cuda:N ... or auto (every GPU); workers are spread over them in turn",
    )
    g.add_argument(
        "--workers-per-device",
        type=int,
        default=None,
        metavar="K",
        help="workers sharing one device (default: workers / devices, rounded up); under Ray each "
        "run asks for 1/K of a GPU",
    )
    g.add_argument(
        "--ray",
        metavar="auto|ADDRESS",
        default=None,
        help="run each run as a Ray task: auto (this machine's cluster, else a local Ray) or a "
        "cluster address such as 10.0.0.1:6379 (pip install 'haq-gym[ray]')",
    )
    g.add_argument(
        "--storage-dir",
        default=None,
        help="with --ray: a folder every node sees; runs are written there, then copied into the "
        "output (default: run folders are sent back to the output)",
    )
    g.add_argument("--cpus-per-run", type=int, default=1, help="with --ray: CPUs (threads) each run asks for")


def grid_settings(args: argparse.Namespace) -> GridSettings:
    """The :class:`GridSettings` of :func:`add_grid_arguments`'s flags (ValueError for what cannot run)."""
    if args.ray is None and args.cpus_per_run != 1:
        raise ValueError("--cpus-per-run is for --ray; on this machine each worker gets cores/workers threads")
    if args.ray is not None and args.workers is not None:
        raise ValueError("with --ray the cluster's free resources decide how many runs go at once; drop --workers")
    return GridSettings(
        workers=args.workers,
        devices=tuple(args.devices),
        workers_per_device=args.workers_per_device,
        ray=args.ray,
        storage_dir=args.storage_dir,
        cpus_per_run=args.cpus_per_run,
    )


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


# What decides a search run's results: the keys of its config.yml a reused run must match.
RUN_SETTING_KEYS = ("algo", "env", "seed", "n_episodes", "env_kwargs", "hyperparams")


class RunSettingsDiffer(ValueError):
    """A finished run folder was made with other settings than the ones asked for now."""


def run_settings_differences(run_dir: Path, wanted: dict[str, Any]) -> list[str]:
    """How the settings recorded in ``run_dir/config.yml`` differ from ``wanted`` (a resolved run config).

    Compares :data:`RUN_SETTING_KEYS` (the budget, env keywords and hyperparameters among
    them; :data:`PLACEMENT_KEYWORDS` left out); a run folder without a readable config is one difference.
    """
    import yaml

    try:
        stored = yaml.safe_load((run_dir / "config.yml").read_text())
    except (OSError, yaml.YAMLError) as err:
        return [f"config.yml unreadable ({type(err).__name__})"]
    if not isinstance(stored, dict):
        return ["config.yml is not a run config"]
    stored, wanted = _without_placement(stored), _without_placement(wanted)
    return [
        f"{key} (run: {stored.get(key)!r}, now: {wanted.get(key)!r})"
        for key in RUN_SETTING_KEYS
        if stored.get(key) != wanted.get(key)
    ]


PLACEMENT_KEYWORDS = ("device",)
"""Env keywords the grid sets for where a run goes (its worker's ``--device``), not for what it computes."""


def _without_placement(config: dict[str, Any]) -> dict[str, Any]:
    env_kwargs = config.get("env_kwargs")
    if not isinstance(env_kwargs, dict):
        return config
    return {**config, "env_kwargs": {k: v for k, v in env_kwargs.items() if k not in PLACEMENT_KEYWORDS}}


def check_reusable_run(run_dir: Path, wanted: dict[str, Any]) -> None:
    """Raise :class:`RunSettingsDiffer` unless the finished run in ``run_dir`` was made with ``wanted``'s settings.

    A resumed benchmark must never relabel old results with new settings (another budget,
    other env keywords).
    """
    differ = run_settings_differences(run_dir, wanted)
    if differ:
        raise RunSettingsDiffer(
            f"{run_dir} was run with other settings: {'; '.join(differ)}; resume with the "
            "same settings or choose another --output"
        )


def log_path(folder: Path) -> Path:
    return folder.with_name(folder.name + ".log")


def describe_exit(code: int) -> str:
    """``exit code 3`` or ``killed by SIGKILL``."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def execute(args: Sequence[str], log: Path, env: dict[str, str]) -> tuple[int, float]:
    """Run ``python args`` with its output in ``log``; returns (exit code, seconds)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "w") as fh:
        fh.write(f"$ HAQ_GYM_THREADS={env.get('HAQ_GYM_THREADS', '')} {sys.executable} {' '.join(args)}\n")
        fh.flush()
        code = subprocess.call(
            [sys.executable, *args],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env={**env, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
        )
    return code, time.perf_counter() - start


def finish(job: Job, code: int, seconds: float, device: str, error: str = "") -> JobResult:
    """Record a job's end: ``job.json`` in its folder when it succeeded; the result either way."""
    ok = code == 0 and job.folder.is_dir() and not error
    if ok:
        record = {
            "name": job.name,
            "args": list(job.args),
            "device": device,
            "seconds": round(seconds, 2),
            "meta": job.meta,
        }
        write_atomic(job.folder / DONE_FILE, json.dumps(record, indent=1))
    elif not error:
        error = describe_exit(code) if code != 0 else "the command wrote no run folder"
    return JobResult(job, ok, seconds, log_path(job.folder), error=error, device=device)


def _run_local(jobs: Sequence[Job], grid: GridSettings, report: Callable[[JobResult], None]) -> None:
    slots = grid.slots()
    free: queue.SimpleQueue[Slot] = queue.SimpleQueue()
    for slot in slots:
        free.put(slot)

    def run(job: Job) -> JobResult:
        slot = free.get()
        try:
            code, seconds = execute(job.command(slot.device), log_path(job.folder), slot.environment())
            return finish(job, code, seconds, slot.device)
        finally:
            free.put(slot)

    with ThreadPoolExecutor(max_workers=len(slots)) as pool:
        for future in as_completed([pool.submit(run, job) for job in jobs]):
            report(future.result())


def _report_progress(
    todo: Sequence[Job],
    desc: str,
    progress: bool,
    results: dict[str, JobResult],
    run: Callable[[Callable[[JobResult], None]], None],
) -> None:
    """Call ``run(report)``, which reports each job's result: an overall bar, one line per finished run."""
    bar = tqdm(total=len(todo), desc=desc, unit="run", disable=not progress)
    failed = 0

    def report(result: JobResult) -> None:
        nonlocal failed
        results[result.job.name] = result
        where = f" on {result.device}" if result.device else ""
        if result.ok:
            status = f"done in {result.seconds:.0f} s{where}"
        else:
            failed += 1
            status = f"FAILED{where} ({result.error}; log: {result.log})"
        bar.write(f"{desc}: {result.job.name} {status}", file=sys.stdout)
        bar.update(1)
        if failed:
            bar.set_postfix(failed=failed)

    try:
        run(report)
    finally:
        bar.close()


def run_jobs(
    jobs: Sequence[Job], grid: GridSettings | int = 1, resume: bool = False, desc: str = "runs", progress: bool = True
) -> list[JobResult]:
    """Run ``jobs`` as ``grid`` says (an int: that many local workers on the CPU); finished ones are reused.

    Returns one result per job, in the order given. A failed job is reported (with its log
    path) and does not stop the others. An unfinished folder is set aside with ``resume``
    and is an error raised before anything runs without it.
    """
    if isinstance(grid, int):
        grid = GridSettings(workers=grid)
    names = [job.name for job in jobs]
    if len(set(names)) != len(names):
        raise ValueError("job names must be unique")
    results: dict[str, JobResult] = {}
    todo: list[Job] = []
    for job in jobs:
        if is_done(job):
            seconds = json.loads((job.folder / DONE_FILE).read_text()).get("seconds", 0.0)
            results[job.name] = JobResult(job, True, float(seconds), log_path(job.folder), reused=True)
            continue
        if job.folder.exists():
            if not resume:
                raise FileExistsError(f"{job.folder} holds an unfinished run; pass --resume to set it aside and rerun")
            set_aside(job.folder)
        todo.append(job)
    if not todo:
        return [results[name] for name in names]
    if grid.ray is None:
        _report_progress(todo, desc, progress, results, lambda report: _run_local(todo, grid, report))
    else:
        from haq_gym.experiments.ray_grid import ray_session, run_on_ray

        with ray_session(grid) as ray:  # an address that does not answer fails here, before any progress bar
            _report_progress(todo, desc, progress, results, lambda report: run_on_ray(ray, todo, grid, report))
    return [results[name] for name in names]
