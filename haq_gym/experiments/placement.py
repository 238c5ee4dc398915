"""Where each worker of a parallel grid runs: its device and its CPU threads.

Every parallel runner of the project (the benchmark grid of :mod:`haq_gym.experiments.jobs`
and the ``--n-jobs`` workers of the tuning) places its workers with :func:`plan_slots`:
worker ``k`` gets device ``devices[k % len(devices)]`` (so several workers share a GPU
when there are more workers than devices) and ``cores // workers`` threads, so that the
workers together use the machine's cores once. A worker receives its thread count as
``HAQ_GYM_THREADS`` in its environment (:data:`THREADS_ENV`), which
:func:`haq_gym.runtime.configure_cpu_runtime` reads.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

THREADS_ENV = "HAQ_GYM_THREADS"
_CUDA = re.compile(r"cuda(?::(\d+))?")


@dataclass(frozen=True)
class Slot:
    """One worker's place: ``index`` among the workers, a torch device name, and its CPU thread count."""

    index: int
    device: str
    threads: int

    def environment(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: this process's environment) with the worker's thread count set."""
        return {**(os.environ if base is None else base), THREADS_ENV: str(self.threads)}


def available_cores() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0))


def cuda_device_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_devices(names: Sequence[str], gpu_count: int | None = None) -> list[str]:
    """Check and expand device names: ``auto`` is every visible GPU (else ``cpu``), ``cuda`` is ``cuda:0``.

    Raises ValueError for a name that is not ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` and for
    a GPU this machine does not have. ``gpu_count`` defaults to torch's count of visible GPUs.
    """
    if not names:
        raise ValueError("name at least one device (cpu, cuda, cuda:N or auto)")
    count = cuda_device_count() if gpu_count is None else gpu_count
    out: list[str] = []
    for name in names:
        if name == "auto":
            out += [f"cuda:{k}" for k in range(count)] or ["cpu"]
            continue
        if name == "cpu":
            out.append("cpu")
            continue
        match = _CUDA.fullmatch(name)
        if match is None:
            raise ValueError(f"unknown device {name!r}; expected cpu, cuda, cuda:N or auto")
        index = int(match[1] or 0)
        if index >= count:
            held = (
                f"{count} CUDA device(s): " + ", ".join(f"cuda:{k}" for k in range(count))
                if count
                else "no CUDA device"
            )
            raise ValueError(f"device {name!r} is not on this machine, which has {held}")
        out.append(f"cuda:{index}")
    return list(dict.fromkeys(out))


def plan_slots(
    workers: int | None,
    devices: Sequence[str] = ("cpu",),
    workers_per_device: int | None = None,
    cores: int | None = None,
    gpu_count: int | None = None,
) -> list[Slot]:
    """The slots of ``workers`` workers over ``devices``, ``workers_per_device`` at most on each.

    ``workers=None`` fills every device with ``workers_per_device`` workers (default 1).
    ``workers_per_device=None`` puts ``ceil(workers / len(devices))`` on each. Raises
    ValueError when the machine cannot hold the workers: more than its CPU cores (each
    worker needs at least one thread) or more than the devices' slots.
    """
    resolved = resolve_devices(devices, gpu_count)
    cores = available_cores() if cores is None else cores
    if workers_per_device is not None and workers_per_device < 1:
        raise ValueError(f"--workers-per-device must be at least 1, got {workers_per_device}")
    if workers is None:
        workers = len(resolved) * (workers_per_device or 1)
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    per_device = workers_per_device or math.ceil(workers / len(resolved))
    if workers > len(resolved) * per_device:
        raise ValueError(
            f"{workers} workers do not fit on {len(resolved)} device(s) ({', '.join(resolved)}) at "
            f"{per_device} per device; raise --workers-per-device or lower --workers"
        )
    if workers > cores:
        raise ValueError(
            f"{workers} workers need at least one CPU core each, and this machine lets this process "
            f"use {cores}; lower --workers (or --n-jobs) to at most {cores}"
        )
    threads = max(1, cores // workers)
    return [Slot(k, resolved[k % len(resolved)], threads) for k in range(workers)]
