"""Model names that the envs and commands accept, with each model's default float recipe."""

from __future__ import annotations

from typing import Callable

from torch import nn

from haq_gym.models.mobilenetv2 import mobilenet_v2_cifar
from haq_gym.models.mobilenetv3 import mobilenet_v3_small_cifar
from haq_gym.models.pretrain import FloatRecipe
from haq_gym.models.resnet import resnet18_cifar, resnet20_cifar

_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "mobilenetv2": mobilenet_v2_cifar,
    "mobilenetv3small": mobilenet_v3_small_cifar,
    "resnet18": resnet18_cifar,
    "resnet20": resnet20_cifar,
}

_RECIPES: dict[str, FloatRecipe] = {
    # ~6x the multiply-accumulates of MobileNetV2 per image: 4 epochs keep its training near 3 minutes on 2 CPU cores.
    "resnet18": FloatRecipe(epochs=4),
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


def default_recipe(name: str) -> FloatRecipe:
    """The float training recipe of ``name``'s default checkpoint (the standard recipe unless tuned)."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(model_names())}")
    return _RECIPES.get(name, FloatRecipe())
