"""The grid of :mod:`haq_gym.experiments.jobs` on a Ray cluster (``--ray auto|ADDRESS``).

Each job is one Ray task that asks for ``cpus_per_run`` CPUs and, when GPUs are asked
for, ``1 / workers_per_device`` of a GPU (Ray then sets the task's
``CUDA_VISIBLE_DEVICES`` and the command runs on ``cuda``). The task runs the same
subprocess as the local pool, with ``HAQ_GYM_THREADS = cpus_per_run``.

Where the run folder goes: without a storage folder the task runs in a scratch folder on
its node (the job's inputs, e.g. a policy file, are sent along) and sends the run folder
and its log back as a tar archive, which the driver unpacks into the output folder. With
``storage_dir`` (a folder every node mounts) the task writes there directly and the driver
copies the finished folder into the output. Either way every node needs haq-gym
installed (the same version) and any file named outside the output folder (a checkpoint,
a data set) at the same path.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import socket
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from haq_gym.experiments.jobs import GridSettings, Job, JobResult, execute, finish, log_path, set_aside
from haq_gym.experiments.placement import THREADS_ENV

RAY_EXTRA = 'pip install "haq-gym[ray]"'
CONNECT_TIMEOUT_S = 5.0
GCS_WAIT_ENV = "RAY_gcs_server_port_wait_time_s"


def import_ray() -> Any:
    """The ``ray`` module, or an ImportError that names the extra to install."""
    try:
        import ray
    except ImportError:
        raise ImportError(f"--ray needs Ray, which is not installed: {RAY_EXTRA}") from None
    return ray


def check_answers(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Raise ConnectionError naming ``address`` unless something listens there (Ray itself would retry for minutes)."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"Ray address {address!r}: expected auto, HOST:PORT (e.g. 10.0.0.1:6379) or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as err:
        raise ConnectionError(
            f"the Ray cluster at {address} does not answer ({err or 'timed out'} within "
            f"{timeout:.0f} s); start it with `ray start --head` there or check the address"
        ) from None


def connect(address: str) -> tuple[Any, bool]:
    """Join the Ray cluster at ``address`` (``auto``: this machine's, else a new local instance).

    Returns ``(ray, started)``; ``started`` is True when this call initialised Ray (the
    caller then shuts it down). An already initialised Ray (e.g. ``ray.init(num_cpus=2)``
    in a test) is used as it is. An address that does not answer as a Ray cluster fails
    with a ConnectionError naming it within about :data:`CONNECT_TIMEOUT_S` seconds (Ray's
    own wait, ``RAY_gcs_server_port_wait_time_s``, is shortened to that unless set).
    """
    ray = import_ray()
    if ray.is_initialized():
        return ray, False
    if address == "auto":
        try:
            ray.init(address="auto", log_to_driver=False)
        except ConnectionError:  # no cluster on this machine: a local one
            ray.init(include_dashboard=False, log_to_driver=False)
        return ray, True
    check_answers(address)
    given = os.environ.get(GCS_WAIT_ENV)
    os.environ.setdefault(GCS_WAIT_ENV, str(int(CONNECT_TIMEOUT_S)))
    try:
        ray.init(address=address, log_to_driver=False)
    except ConnectionError as err:
        raise ConnectionError(
            f"the Ray cluster at {address} does not answer ({err}); start it with "
            "`ray start --head` there or check the address"
        ) from None
    finally:
        if given is None:
            os.environ.pop(GCS_WAIT_ENV, None)
    return ray, True


@contextmanager
def ray_session(grid: GridSettings) -> Iterator[Any]:
    """Ray connected as ``grid.ray`` says, its resources checked for ``grid``; shut down after if started here."""
    assert grid.ray is not None
    ray, started = connect(grid.ray)
    try:
        _check_cpus(ray, grid)
        _gpu_request(ray, grid)
        yield ray
    finally:
        if started:
            ray.shutdown()


def pack(root: Path, names: Sequence[str]) -> bytes:
    """A tar archive of the paths ``names`` under ``root`` (those that exist)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in names:
            if (root / name).exists():
                tar.add(root / name, arcname=name)
    return buffer.getvalue()


def unpack(archive: bytes, root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r") as tar:
        tar.extractall(root, filter="data")


def relocate(args: Sequence[str], root: Path, here: Path) -> list[str]:
    """``args`` with every path under ``root`` moved under ``here``."""
    pattern = re.compile(re.escape(str(root)) + r"(?=/|$)")
    return [pattern.sub(str(here).replace("\\", "\\\\"), a) for a in args]


def run_task(
    args: Sequence[str], root: str, folder: str, device: str, threads: int, storage: str | None, inputs: bytes | None
) -> dict[str, Any]:
    """The body of one Ray task: run the job below a folder of this node; send the run back unless shared."""
    here = Path(storage) if storage else Path(tempfile.mkdtemp(prefix="haq_gym_ray_"))
    try:
        if inputs:
            unpack(inputs, here)
        run_dir = here / folder
        env = {**os.environ, THREADS_ENV: str(threads)}
        code, seconds = execute(relocate(args, Path(root), here), log_path(run_dir), env)
        archive = None if storage else pack(here, [folder, log_path(Path(folder)).as_posix()])
        return {"code": code, "seconds": seconds, "archive": archive, "node": socket.gethostname()}
    finally:
        if not storage:
            shutil.rmtree(here, ignore_errors=True)


def _gpu_request(ray: Any, grid: GridSettings) -> float:
    """The share of a GPU each task asks for (0: none); refuses GPUs the cluster does not have."""
    gpus = ray.cluster_resources().get("GPU", 0)
    wants = "cuda" in grid.devices or ("auto" in grid.devices and gpus > 0)
    if not wants:
        return 0.0
    if gpus <= 0:
        raise ValueError("--devices cuda with --ray, but the Ray cluster has no GPU")
    return 1.0 / (grid.workers_per_device or 1)


def _check_cpus(ray: Any, grid: GridSettings) -> None:
    most = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=0)
    if grid.cpus_per_run > most:
        raise ValueError(
            f"--cpus-per-run {grid.cpus_per_run}: no node of the Ray cluster has that many CPUs (largest: {most:g})"
        )


def run_on_ray(ray: Any, jobs: Sequence[Job], grid: GridSettings, report: Callable[[JobResult], None]) -> None:
    """Submit every job as a Ray task and report each result as it ends (see the module docstring)."""
    for job in jobs:
        if not job.folder.is_absolute():
            raise ValueError(f"a Ray grid needs absolute run folders, got {job.folder}")
    gpu = _gpu_request(ray, grid)
    device = "cuda" if gpu else "cpu"
    root = Path(os.path.commonpath([p.parent for job in jobs for p in (job.folder, *job.inputs)]))
    storage = Path(grid.storage_dir).absolute() if grid.storage_dir else None
    remote = ray.remote(max_retries=0)(run_task).options(num_cpus=grid.cpus_per_run, num_gpus=gpu)
    pending: dict[Any, Job] = {}
    for job in jobs:
        folder = job.folder.relative_to(root).as_posix()
        inputs = [p.relative_to(root).as_posix() for p in job.inputs]
        if storage is not None:
            set_aside(storage / folder)  # an earlier attempt's leftovers
            for name in inputs:
                (storage / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(root / name, storage / name)
        archive = pack(root, inputs) if inputs and storage is None else None
        ref = remote.remote(
            job.command(device),
            str(root),
            folder,
            device,
            grid.cpus_per_run,
            None if storage is None else str(storage),
            archive,
        )
        pending[ref] = job
    while pending:
        (ref,), _ = ray.wait(list(pending), num_returns=1)
        job = pending.pop(ref)
        try:
            out = ray.get(ref)
        except ray.exceptions.RayError as err:  # the worker process or its node died
            log = log_path(job.folder)
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "a") as fh:
                fh.write(f"\nRay task failed: {err}\n")
            report(finish(job, 1, 0.0, device, error=f"Ray task failed: {type(err).__name__}"))
            continue
        relative = job.folder.relative_to(root)
        if out["archive"] is not None:
            unpack(out["archive"], root)
        elif storage is not None and (storage / relative).is_dir():
            shutil.copytree(storage / relative, job.folder)
            if log_path(storage / relative).exists():
                shutil.copy2(log_path(storage / relative), log_path(job.folder))
        report(finish(job, out["code"], out["seconds"], f"{device} of {out['node']}"))
