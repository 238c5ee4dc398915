"""Model names that the envs and commands accept."""

from __future__ import annotations

from typing import Callable

from torch import nn

from haq_gym.models.mobilenetv2 import mobilenet_v2_cifar

_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "mobilenetv2": mobilenet_v2_cifar,
}


def model_names() -> tuple[str, ...]:
    """Names accepted by :func:`build_model`."""
    return tuple(sorted(_BUILDERS))


def build_model(name: str, num_classes: int, width_mult: float = 1.0) -> nn.Module:
    """Build an untrained float model by name."""
    try:
        builder = _BUILDERS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(model_names())}") from None
    return builder(num_classes=num_classes, width_mult=width_mult)
