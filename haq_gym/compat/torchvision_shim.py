"""Make ``import torchvision`` work with a CPU-only torch build.

PyPI ships torchvision 0.28.0 only as a CUDA build. Its compiled extension ``_C.so``
links against ``libtorch_cuda.so``; next to a CPU build of torch it cannot load, and
torchvision's import then fails with ``RuntimeError: operator torchvision::nms does not
exist`` because its meta registrations refer to operators the extension should have
defined. When (and only when) the extension cannot be loaded, we define the two
operator schemas torchvision's Python code registers kernels for. Models and transforms
then work; detection ops (``torchvision.ops.nms``) and image decoding stay unavailable,
which haq-gym does not use.

Where the extension loads (a matching torch build) this function does nothing: defining
the schemas there would clash with torchvision's own registration.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os

import torch

_library: torch.library.Library | None = None


def ensure_torchvision_importable() -> bool:
    """Define torchvision's operator schemas if its compiled ops cannot load.

    Returns True when the schemas were defined by this call (the CPU-torch case),
    False when nothing was needed or torchvision is not installed.
    """
    global _library
    if _library is not None:
        return False
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return False
    ext = os.path.join(os.path.dirname(spec.origin), "_C.so")
    if not os.path.exists(ext):
        return False
    try:
        ctypes.CDLL(ext)
        return False
    except OSError:
        pass
    lib = torch.library.Library("torchvision", "FRAGMENT")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _library = lib
    return True
