"""Model names that the envs and commands accept, with each model's default float recipe."""

from __future__ import annotations

from collections.abc import Callable

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

# Keyed by (model, dataset); "*" matches any. The first match in this order wins:
# (model, dataset), ("*", dataset), (model, "*").
_RECIPES: dict[tuple[str, str], FloatRecipe] = {
    # ~6x the multiply-accumulates of MobileNetV2 per image: 4 epochs keep its training near 3 minutes on 2 CPU cores.
    ("resnet18", "digits"): FloatRecipe(epochs=4),
    # 50,000 training images: batch 128 and CIFAR's weight decay; meant for a GPU (about 6,000 steps).
    ("*", "fashion-mnist"): FloatRecipe(epochs=15, batch_size=128, weight_decay=5e-4),
    ("*", "mnist"): FloatRecipe(epochs=8, batch_size=128, weight_decay=5e-4),
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


def default_recipe(name: str, dataset: str = "digits") -> FloatRecipe:
    """The float training recipe of ``name``'s default checkpoint on ``dataset`` (the standard recipe unless tuned)."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(model_names())}")
    for key in ((name, dataset), ("*", dataset), (name, "*")):
        if key in _RECIPES:
            return _RECIPES[key]
    return FloatRecipe()
