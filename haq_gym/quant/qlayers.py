"""Conv2d and Linear layers that quantize their weight and their input activation.

The wrappers keep the float layer's parameters and state-dict keys (HAQ's linear
quantizers hold no state-dict entries), so a float checkpoint loads into a wrapped model
unchanged. A new wrapper starts with the default family's quantizers
(:mod:`haq_gym.quant.families`); any :class:`~haq_gym.quant.protocol.Quantizer` plugs in.
``w_bit``/``a_bit`` follow HAQ's convention: ``-1`` means "not quantized".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional as F

from haq_gym.quant.families import DEFAULT_FAMILY, get_family
from haq_gym.quant.protocol import InputCodes, Quantizer, ScaledWeight

if TYPE_CHECKING:
    from typing_extensions import Self


class QuantLayerMixin(nn.Module):
    """Shared bit-width interface of :class:`QuantConv2d` and :class:`QuantLinear` (a module with a weight)."""

    weight: torch.Tensor
    weight_quantizer: Quantizer
    input_quantizer: Quantizer

    @classmethod
    def from_float(cls, module: nn.Module, seed: int = 0) -> Self:
        """Wrap a float layer, sharing its parameters (nothing is copied)."""
        q = cls.__new__(cls)
        q.__dict__.update(module.__dict__)
        q._init_quantizers(seed)
        return q

    def _init_quantizers(self, seed: int) -> None:
        self.weight_quantizer, self.input_quantizer = get_family(DEFAULT_FAMILY).build(seed)

    def set_quantizers(self, weight_quantizer: Quantizer, input_quantizer: Quantizer) -> None:
        """Swap in other quantizers (e.g. LSQ); they keep the current bit widths."""
        w_bit, a_bit = self.w_bit, self.a_bit
        self.weight_quantizer = weight_quantizer
        self.input_quantizer = input_quantizer
        self.set_bits(w_bit, a_bit)

    @property
    def w_bit(self) -> int:
        bits = self.weight_quantizer.bits
        return -1 if bits is None else int(bits)

    @property
    def a_bit(self) -> int:
        bits = self.input_quantizer.bits
        return -1 if bits is None else int(bits)

    def _operands(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The (input, weight) pair to compute with.

        At inference, when the input quantizer hands out codes (:class:`InputCodes`) and the
        weight quantizer a scaled weight (:class:`ScaledWeight`), as HAQ's linear ones do,
        the input's step is folded into the (cached) weight: ``conv(q * s, w) == conv(q, s * w)``,
        one pass over the activations fewer. Otherwise each quantizer fake-quantizes its own tensor.
        """
        wq, aq = self.weight_quantizer, self.input_quantizer
        if (
            isinstance(aq, InputCodes)
            and isinstance(wq, ScaledWeight)
            and aq.bits is not None
            and not aq.observing
            and not (self.training and torch.is_grad_enabled())
        ):
            codes, step = aq.codes(x)
            return codes, wq.scaled(self.weight, step)
        return aq(x), wq(self.weight)

    def set_bits(self, w_bit: int, a_bit: int) -> None:
        """Set both bit widths; ``-1`` turns quantization of that tensor off."""
        self.weight_quantizer.set_bits(None if w_bit == -1 else int(w_bit))
        self.input_quantizer.set_bits(None if a_bit == -1 else int(a_bit))


class QuantConv2d(QuantLayerMixin, nn.Conv2d):
    """``nn.Conv2d`` with a weight quantizer and an input-activation quantizer."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self._conv_forward(*self._operands(x), self.bias)
        return out


class QuantLinear(QuantLayerMixin, nn.Linear):
    """``nn.Linear`` with a weight quantizer and an input-activation quantizer."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(*self._operands(x), self.bias)
