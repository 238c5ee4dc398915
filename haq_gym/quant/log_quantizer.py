"""Seed 004's logarithmic 8-bit weight format (HiSilicon NNIE style) as a weight quantizer.

A weight ``x`` becomes ``sign(x) * 2**(c / 16)``: its log2 magnitude rounded on a 1/16
grid (halves to even), clipped to the 128 levels ``[top - 127, top]`` below the
tensor's maximum ``top = floor(16 * log2 max|x|)``; negative values use levels
``top - 126 .. top`` (the lowest level is taken by the positive side, as in seed 004's
``mimic_hisi``), and magnitudes more than one octave (16 levels) below the lowest level
are flushed to zero.

Storage (one byte per weight, sign-magnitude): ``k = c - (top - 127)`` in 0..127;
positive ``x`` -> ``k``; negative ``x`` -> ``0x80 | k`` (``k >= 1``); zero -> ``0x80``.
The per-tensor ``top`` (an integer) goes in the packed file's header; decoding is
``0x80 -> 0`` and otherwise ``±2**((top - 127 + k) / 16)``.

Integer inference: products with ``2**(j/16)`` are not integers, so the integer engine
decodes the codes onto a uniform grid: :func:`log8_to_linear` maps code ``k`` to
``±MAG[k]``, ``MAG[k] = round(2**(F + (k - 127) / 16))`` (a 128-entry integer table),
with step ``2**(top / 16 - F)``. That is exact to ``2**-F`` of the largest weight, not
bit-exact with the float decode; the export reports how the two paths agree.
"""

from __future__ import annotations

import math

import torch

from haq_gym.quant.grid import QuantGrid
from haq_gym.quant.protocol import Quantizer

LOG_BITS = 8
LEVELS = 128
DELTA = 1.0 / 16
ZERO_CODE = 0x80


def log8_codes(weight: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``(codes int32 in 0..255, top)`` of ``weight`` in the log8 format (see the module doc)."""
    x = weight.detach().double()
    mag = x.abs()
    if not bool((mag > 0).any()):
        return torch.full(x.shape, ZERO_CODE, dtype=torch.int32), 0
    log2 = torch.log2(mag)  # -inf for zeros
    top = math.floor(float(log2.max()) / DELTA)
    bottom = top - (LEVELS - 1)
    level = torch.clamp(torch.round(log2 / DELTA), bottom, top)
    negative = x < 0
    level = torch.where(negative & (level == bottom), level + 1, level)
    flush = torch.where(negative, log2 / DELTA <= top - 126 - 16, log2 / DELTA <= top - 127 - 16)
    k = (level - bottom).to(torch.int32)
    codes = torch.where(negative, k | ZERO_CODE, k)
    codes = torch.where(flush, torch.full_like(codes, ZERO_CODE), codes)
    return codes.to(torch.int32), int(top)


def log8_decode(codes: torch.Tensor, top: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Real values of log8 ``codes`` (the quantizer's forward output, bit for bit, in ``dtype``)."""
    codes = codes.to(torch.int64)
    if bool(((codes < 0) | (codes > 255)).any()):
        raise ValueError("log8 codes must be bytes (0..255)")
    k = (codes & 0x7F).double()
    sign = torch.where(codes >= ZERO_CODE, -1.0, 1.0).double()
    values = sign * torch.pow(2.0, (top - (LEVELS - 1) + k) * DELTA)
    return torch.where(codes == ZERO_CODE, torch.zeros_like(values), values).to(dtype)


def log8_to_linear(codes: torch.Tensor, top: int, frac_bits: int) -> tuple[torch.Tensor, float]:
    """Decode log8 codes onto the uniform grid ``step = 2**(top/16 - frac_bits)``: ``(int32 codes, step)``.

    Integer ops only on the codes: a 128-entry magnitude table indexed by ``k`` and the
    sign bit. ``|code| <= 2**frac_bits``.
    """
    table = torch.tensor(
        [round(2.0 ** (frac_bits + (k - (LEVELS - 1)) * DELTA)) for k in range(LEVELS)], dtype=torch.int32
    )
    mag = table[(codes & 0x7F).to(torch.int64)]
    signed = torch.where(codes >= ZERO_CODE, -mag, mag)
    linear = torch.where(codes == ZERO_CODE, torch.zeros_like(signed), signed).to(torch.int32)
    return linear, 2.0 ** (top * DELTA - frac_bits)


class LogWeightQuantizer(Quantizer):
    """Weight quantizer for the log8 format; plugs into the layer wrappers like the linear ones.

    ``bits`` is 8 (the format's width) or ``None`` (pass-through). Training uses a
    straight-through estimator: the forward value is the log8 weight, the gradient is the
    identity. The format has no uniform grid, so :meth:`grid` raises; exporters use
    :meth:`log_codes`.
    """

    def __init__(self) -> None:
        super().__init__("weight")

    def set_bits(self, bits: int | None) -> None:
        if bits is not None and bits != LOG_BITS:
            raise ValueError(f"the log quantizer stores {LOG_BITS}-bit codes (seed 004's format); got {bits} bits")
        self.bits = bits

    def reset_calibration(self) -> None:
        """Nothing to reset: the per-tensor maximum is taken from the weight on every call."""

    def log_codes(self, weight: torch.Tensor) -> tuple[torch.Tensor, int]:
        """``(codes int32 0..255, top)`` of ``weight``."""
        return log8_codes(weight)

    def grid(self, tensor: torch.Tensor | None = None) -> QuantGrid:
        raise TypeError("the log8 format has no uniform grid; use log_codes() (the integer exporter does)")

    def quantize(self, weight: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            codes, top = log8_codes(weight)
            q = log8_decode(codes, top, weight.dtype)
        if self.training and torch.is_grad_enabled():
            return weight + (q - weight).detach()
        return q

    def extra_repr(self) -> str:
        return f"bits={self.bits}, log2 grid 1/16"
