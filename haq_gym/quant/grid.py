"""The integer grid a quantizer maps a tensor onto: what an exporter needs to know of any quantizer."""

from __future__ import annotations

import math
from dataclasses import dataclass

from haq_gym.quant.fake_quant import activation_levels, weight_qmax


@dataclass(frozen=True)
class QuantGrid:
    """Real value ``step * q`` for integer codes ``q`` in ``[qmin, qmax]``.

    Every quantizer family (HAQ's linear quantizers, LSQ, power-of-two LSQ) reports its
    current grid through ``grid()``, so the integer exporter never needs to know which
    family trained the model. ``offset`` is LSQ+'s learned activation offset (real value
    ``step * q + offset``); it is 0 for every other quantizer.
    """

    step: float
    qmin: int
    qmax: int
    offset: float = 0.0

    def __post_init__(self) -> None:
        if not (self.step > 0 and math.isfinite(self.step)):
            raise ValueError(f"a quantization step must be positive and finite, got {self.step}")
        if self.qmin >= self.qmax:
            raise ValueError(f"empty integer range [{self.qmin}, {self.qmax}]")

    @property
    def signed(self) -> bool:
        return self.qmin < 0

    @property
    def power_of_two(self) -> bool:
        """Whether ``step`` is exactly ``2**k`` for an integer ``k`` (requantisation is then a shift)."""
        mantissa, _ = math.frexp(self.step)
        return mantissa == 0.5


def weight_grid(clip: float, bits: int) -> QuantGrid:
    """HAQ's symmetric weight grid for a weight clipped at ``clip``: codes ``-qmax..qmax``, step ``clip / qmax``."""
    qmax = weight_qmax(bits)
    return QuantGrid(step=clip / qmax, qmin=-qmax, qmax=qmax)


def activation_grid(alpha: float, bits: int, signed: bool) -> QuantGrid:
    """HAQ's activation grid for inputs clipped at ``alpha`` (unsigned, or signed when inputs go negative)."""
    qmin, qmax = activation_levels(bits, signed)
    return QuantGrid(step=alpha / qmax, qmin=qmin, qmax=qmax)
