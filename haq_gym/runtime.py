"""Process-level speed settings for command-line entry points and benchmarks.

These change global state (the C allocator, torch's thread count), so the library never
calls them on import; ``train_agent.py`` and the benchmark scripts do.
"""

from __future__ import annotations

import ctypes
import os

import torch

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
        env = os.environ.get("HAQ_GYM_THREADS")
        num_threads = int(env) if env else len(os.sched_getaffinity(0))
    torch.set_num_threads(max(1, num_threads))


def torch_device(name: str) -> torch.device:
    """Resolve ``cpu``/``cuda``/``auto``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ValueError(f"device must be cpu, cuda, cuda:N or auto; got {name!r}")
    return torch.device(name)
