"""Process-level speed settings for command-line entry points, benchmarks and their workers.

These change global state (the C allocator, torch's thread count), so the library never
calls them on import; ``train_agent.py`` and the benchmark scripts do.

Thread counts: a lone process uses every core it may (``HAQ_GYM_THREADS`` overrides).
Launchers that start several haq-gym processes on one machine (the benchmark job pool,
``--optimize --n-jobs``) give each worker :func:`worker_environment`: ``cores // workers``
threads and, where several GPUs are visible, one GPU of its own. Without that, N
processes on N cores each start N threads and the machine thrashes (issue 14: 16
processes on 16 cores, load average 245, GPU idle).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping

import torch

THREADS_ENV = "HAQ_GYM_THREADS"

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def tune_glibc_allocator() -> bool:
    """Keep freed heap memory and never serve large tensors with fresh ``mmap`` calls.

    On this project's reference CPU, half the time of a MobileNetV2 forward pass went to
    page faults on freshly mapped activation buffers; these two ``mallopt`` settings gave a
    4-5x faster forward (see docs/performance.md). The price: resident memory does not
    shrink back after a peak. Returns False where glibc is not available.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok_trim = libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
        ok_mmap = libc.mallopt(_M_MMAP_MAX, 0)
    except (OSError, AttributeError):
        return False
    return bool(ok_trim and ok_mmap)


def configure_cpu_runtime(num_threads: int | None = None) -> None:
    """Apply the allocator settings and set torch's intra-op thread count.

    ``num_threads`` defaults to the ``HAQ_GYM_THREADS`` environment variable, else the
    number of CPUs this process may use.
    """
    tune_glibc_allocator()
    if num_threads is None:
        num_threads = env_threads() or available_cores()
    torch.set_num_threads(max(1, num_threads))


def available_cores() -> int:
    """CPUs this process may run on (its affinity mask, not the machine's count)."""
    return len(os.sched_getaffinity(0))


def env_threads() -> int | None:
    """``$HAQ_GYM_THREADS`` as a positive int, ``None`` when unset; a bad value is a ValueError."""
    value = os.environ.get(THREADS_ENV, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{THREADS_ENV} must be a positive integer, got {value!r}")
    return int(value)


def threads_per_worker(workers: int) -> int:
    """Torch threads for each of ``workers`` processes sharing this process's cores (at least 1)."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    return max(1, available_cores() // workers)


def visible_gpus() -> list[str]:
    """The CUDA devices a child process could use, as ``CUDA_VISIBLE_DEVICES`` entries."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


def worker_environment(index: int, workers: int, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for worker ``index`` of ``workers`` haq-gym processes started together on this machine.

    ``HAQ_GYM_THREADS`` becomes ``cores // workers`` unless the caller's environment sets
    it (an explicit value wins). With several visible GPUs, ``CUDA_VISIBLE_DEVICES`` names
    one of them, round-robin by ``index``, so ``--device cuda`` in worker ``k`` is its own GPU.
    """
    env = dict(os.environ if base is None else base)
    if not env.get(THREADS_ENV, "").strip():
        env[THREADS_ENV] = str(threads_per_worker(workers))
    gpus = visible_gpus()
    if len(gpus) > 1:
        env["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
    return env


def torch_device(name: str) -> torch.device:
    """Resolve ``cpu``/``cuda``/``auto``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ValueError(f"device must be cpu, cuda, cuda:N or auto; got {name!r}")
    return torch.device(name)
