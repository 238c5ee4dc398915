"""The quantizer contract: what the layer wrappers, calibration, the search and the exporter rely on.

Every quantizer is a :class:`Quantizer`: an ``nn.Module`` for one tensor of a layer (its
``role``: the weight or the input activation) with

- ``bits`` and :meth:`~Quantizer.set_bits` (``None`` = pass-through);
- a calibration hook: while ``observing`` is set, :meth:`~Quantizer.forward` hands the
  tensor to :meth:`~Quantizer.observe` and returns it unchanged, and
  :meth:`~Quantizer.reset_calibration` forgets what calibration derived;
- :meth:`~Quantizer.reinitialize`, which puts learned parameters back to their initial
  value for the current bits (the search calls it before judging each policy);
- :meth:`~Quantizer.grid`, the integer grid of the current bits (for the exporter);
- :meth:`~Quantizer.quantize`, the fake quantization itself.

Calibration statistics are gathered by observers (:mod:`haq_gym.quant.observers`) that a
quantizer composes, as ``torch.ao.quantization`` separates observers from fake-quant
modules. Two optional capabilities let a layer fold its input's step into its weight at
inference (:class:`InputCodes` and :class:`ScaledWeight`); the wrappers ask for them
explicitly instead of testing for concrete classes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from haq_gym.quant.grid import QuantGrid

Role = Literal["weight", "activation"]
ROLES: tuple[Role, ...] = ("weight", "activation")


class Quantizer(nn.Module, ABC):
    """Fake quantizer of one tensor (a layer's weight or its input activation).

    ``family`` names the registered family (:mod:`haq_gym.quant.families`) that built it,
    ``None`` for a quantizer made by hand.
    """

    def __init__(self, role: Role) -> None:
        super().__init__()
        if role not in ROLES:
            raise ValueError(f"role must be 'weight' or 'activation', got {role!r}")
        self.role: Role = role
        self.bits: int | None = None
        self.observing = False
        self.family: str | None = None

    if TYPE_CHECKING:
        # nn.Module.__call__ is typed ``(...) -> Any``; a quantizer maps a tensor to a tensor.
        def __call__(self, x: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def set_bits(self, bits: int | None) -> None:
        """Change the bit width (``None`` turns quantization off); raises ``ValueError`` for one it cannot use."""

    @abstractmethod
    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """Fake-quantize ``x`` at the current (not ``None``) bit width."""

    @abstractmethod
    def reset_calibration(self) -> None:
        """Forget the ranges (and, for activations, the statistics) calibration derived."""

    @abstractmethod
    def grid(self, tensor: torch.Tensor | None = None) -> QuantGrid:
        """The integer grid of the current bits; weight quantizers whose range comes from the weight need it.

        Quantizers without a uniform grid (k-means, log8) raise ``TypeError``.
        """

    def observe(self, x: torch.Tensor) -> None:
        """Record calibration statistics of ``x`` (a no-op for quantizers whose range comes from the tensor itself)."""

    def reinitialize(self) -> None:
        """Put learned parameters back to their initial value for the current bits (a no-op if nothing is learned)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing:
            self.observe(x)
            return x
        if self.bits is None:
            return x
        return self.quantize(x)


class InputCodes(ABC):
    """An activation quantizer that can return its integer codes and step at inference."""

    @abstractmethod
    def codes(self, x: torch.Tensor) -> tuple[torch.Tensor, float]:
        """``(clamp(round(x / step)) as floats, step)``, with ``codes * step == quantize(x)``."""


class ScaledWeight(ABC):
    """A weight quantizer that can return its quantized weight times a factor (cached)."""

    @abstractmethod
    def scaled(self, weight: torch.Tensor, factor: float) -> torch.Tensor:
        """Eval-mode quantized ``weight`` times ``factor``."""
