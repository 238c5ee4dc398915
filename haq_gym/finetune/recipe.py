"""The QAT training recipe and LSQ's weight-decay conventions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from haq_gym.quant.qlayers import QuantLayerMixin


@dataclass(frozen=True)
class QATRecipe:
    """SGD with momentum and a cosine schedule without restarts (the LSQ paper's recipe).

    ``weight_decay`` is the base decay of layers at 4 bits or more; LSQ's sweep lowered it
    at lower precision (ResNet-18: 1e-4 at 4/8 bits, 0.5e-4 at 3, 0.25e-4 at 2), so each
    layer's weight gets ``weight_decay * weight_decay_factor(w_bit)``. Steps, offsets,
    BatchNorm parameters and biases get none: decaying a step would shrink the clip range
    for no accuracy reason.
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-5
    calibration_size: int = 256

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be non-negative, got {self.weight_decay}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def weight_decay_factor(w_bit: int) -> float:
    """LSQ's precision-dependent weight decay, relative to 4 bits and above (and float)."""
    if w_bit == 2:
        return 0.25
    if w_bit == 3:
        return 0.5
    return 1.0


def parameter_groups(model: nn.Module, layers: Sequence[QuantLayerMixin], weight_decay: float) -> list[dict[str, Any]]:
    """Optimizer groups: each quantized layer's weight with its decay; everything else without decay."""
    groups: list[dict[str, Any]] = []
    seen: set[int] = set()
    for layer in layers:
        factor = weight_decay_factor(layer.w_bit)
        groups.append({"params": [layer.weight], "weight_decay": weight_decay * factor})
        seen.add(id(layer.weight))
    rest = [p for p in model.parameters() if id(p) not in seen]
    groups.append({"params": rest, "weight_decay": 0.0})
    return [g for g in groups if g["params"]]
