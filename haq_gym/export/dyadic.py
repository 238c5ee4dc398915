"""Dyadic numbers ``m * 2**-n``: every rescale of the integer model, and the one rounding rule it uses.

A real multiplier ``M`` is stored as an integer mantissa ``m`` (``|m| < 2**31``, int32)
and a shift ``n``. :func:`to_dyadic` picks the nearest such pair with a 31-bit
normalised mantissa (``round(frac * 2**31)`` with ``M = frac * 2**e``, ``frac`` in
``[0.5, 1)``; ties to even), then strips trailing zero bits of ``m``, so a power of two
comes out as ``m = ±1`` and requantisation by it is a plain shift.

:func:`requantize` computes ``round(x * m / 2**n)`` exactly, in int64, rounding halves
to even: the rule of ``torch.round`` (and of the fake-quant forward it must agree with),
not TFLite's half-up or gemmlowp's double rounding (``../shared/reference/lsq.md`` 3.2).
A negative ``m`` is allowed (a BatchNorm channel with ``gamma < 0``): half-to-even is
symmetric, ``round(-u) == -round(u)``, so the sign can sit in the multiplier instead of
in the weights (negating the weights would overflow ``-2**(b-1)`` on a full-range grid).
"""

from __future__ import annotations

import math

import numpy as np
import torch

MANTISSA_BITS = 31
"""``|m| < 2**31``: the mantissa fits an int32, and ``|x * m| < 2**62`` for any int32 ``x``."""
MAX_MULTIPLIER = 2.0**30
"""Largest ``|M|`` accepted; keeps ``x * M`` (a left shift when ``n < 0``) inside int64."""
MAX_SHIFT = 62
"""Largest right shift: ``|x * m| < 2**62``, so shifting further would always give 0 or -1."""
WIDE_SPLIT = 31
""":func:`requantize_wide` splits its int64 operand at this bit; its shifts lie in ``WIDE_SPLIT..MAX_WIDE_SHIFT``."""
MAX_WIDE_SHIFT = WIDE_SPLIT + MAX_SHIFT
"""Largest right shift of :func:`requantize_wide` (products of two fine scales need more than 62)."""
MAX_WIDE_OPERAND = 2**62
"""``|p|`` bound of :func:`requantize_wide`: ``p`` a product of an int32 and a value below ``2**30``, plus an offset."""


def to_dyadic(real: float, max_shift: int = MAX_SHIFT) -> tuple[int, int]:
    """``(m, n)`` with ``m * 2**-n`` the nearest dyadic to ``real`` at a 31-bit mantissa.

    ``m`` is odd (or 0 for ``real == 0``, returned as ``(0, 0)``). Raises ``ValueError``
    for a non-finite value, ``|real| >= 2**30`` or ``|real| < 2**-31``-ish (a shift past
    ``max_shift``: :data:`MAX_SHIFT` for :func:`requantize`, :data:`MAX_WIDE_SHIFT` for
    :func:`requantize_wide`), which no export should produce.
    """
    if not math.isfinite(real):
        raise ValueError(f"cannot represent the non-finite multiplier {real!r} as m * 2**-n")
    if real == 0.0:
        return 0, 0
    if abs(real) >= MAX_MULTIPLIER:
        raise ValueError(f"multiplier {real!r} is too large (|M| must be below 2**30)")
    frac, exp = math.frexp(abs(real))  # |real| = frac * 2**exp, frac in [0.5, 1)
    m = round(frac * 2**MANTISSA_BITS)  # exact product; Python's round is half to even
    n = MANTISSA_BITS - exp
    if m == 2**MANTISSA_BITS:  # frac rounded up to 1.0
        m, n = m >> 1, n - 1
    while m % 2 == 0:
        m, n = m >> 1, n - 1
    if n > max_shift:
        raise ValueError(f"multiplier {real!r} is too small (it needs a right shift of {n} > {max_shift})")
    return (m if real > 0 else -m), n


def to_dyadic_array(reals: np.ndarray, max_shift: int = MAX_SHIFT) -> tuple[np.ndarray, np.ndarray]:
    """Element-wise :func:`to_dyadic`: ``(mantissas int64, shifts int64)`` of the same shape."""
    flat = np.asarray(reals, dtype=np.float64).reshape(-1)
    pairs = [to_dyadic(float(r), max_shift) for r in flat]
    m = np.array([p[0] for p in pairs], dtype=np.int64).reshape(np.shape(reals))
    n = np.array([p[1] for p in pairs], dtype=np.int64).reshape(np.shape(reals))
    return m, n


def dyadic_value(m: int, n: int) -> float:
    """The real value ``m * 2**-n`` (exact in float64 for the pairs :func:`to_dyadic` returns)."""
    return math.ldexp(m, -n)


def round_shift(p: torch.Tensor, n: torch.Tensor | int) -> torch.Tensor:
    """``round(p / 2**n)`` with halves to even, for int64 ``p`` (``|p| < 2**62``); ``n <= 0`` is an exact left shift.

    ``n`` broadcasts against ``p`` (one shift per channel). With ``p = q * 2**n + r``
    (``0 <= r < 2**n``), ``(p + 2**(n-1) - 1 + (q & 1)) >> n`` is ``q`` below the half,
    ``q + 1`` above it and the even one of the two at exactly the half; the arithmetic
    right shift is a floor, so negative ``p`` follow the same rule.
    """
    if p.dtype != torch.int64:
        raise TypeError(f"round_shift expects an int64 tensor, got {p.dtype}")
    return _round_shift_(p.clone(), n)


def requantize(x: torch.Tensor, m: torch.Tensor | int, n: torch.Tensor | int) -> torch.Tensor:
    """``round(x * m / 2**n)`` (halves to even) in int64, for int32 ``x``.

    Shapes: ``m`` and ``n`` broadcast against ``x`` (e.g. ``[1, C, 1, 1]`` per channel of
    an ``[N, C, H, W]`` accumulator). Exact: ``|x| < 2**31`` and ``|m| < 2**31`` keep the
    product below ``2**62``.

    Fast path: with ``m`` odd and ``n >= 33`` no product is an exact half (a half would
    need ``x * m = (2j + 1) * 2**(n-1)``, so ``2**(n-1) >= 2**32`` would divide ``x``,
    impossible for ``0 < |x| <= 2**31``), so half-to-even equals half-up,
    ``(p + 2**(n-1)) >> n``: two passes instead of four. :func:`to_dyadic` gives odd
    mantissas, and ``n >= 33`` whenever ``|M| < 2**-2``, the usual case.
    """
    if x.dtype != torch.int32:
        raise TypeError(f"requantize expects int32 values, got {x.dtype}")
    # At least 1-d: a 0-d int64 operand does not promote an int32 tensor, and the product would wrap.
    m = torch.as_tensor(m, dtype=torch.int64, device=x.device)
    if m.dim() == 0:
        m = m.reshape(1)
    n = torch.as_tensor(n, dtype=torch.int64, device=x.device)
    if bool((n >= 33).all()) and bool((m.bitwise_and(1) == 1).all()):
        half = torch.bitwise_left_shift(torch.ones_like(n), n - 1)
        return torch.addcmul(half, x, m).bitwise_right_shift_(n)  # int32 * int64 promotes to int64
    return _round_shift_(torch.mul(x, m), n)


def _round_shift_(p: torch.Tensor, n: torch.Tensor | int) -> torch.Tensor:
    """:func:`round_shift` computed in place in ``p`` (fewer passes over large tensors)."""
    n = torch.as_tensor(n, dtype=torch.int64, device=p.device)
    if not bool((n > 0).all()):
        rounded = _round_shift_(p.clone(), n.clamp(min=1))
        return torch.where(n > 0, rounded, torch.bitwise_left_shift(p, (-n).clamp(min=0)))
    odd = torch.bitwise_right_shift(p, n).bitwise_and_(1)
    bias = torch.bitwise_left_shift(torch.ones_like(n), n - 1).sub_(1)
    return p.add_(bias).add_(odd).bitwise_right_shift_(n)


def requantize_wide(p: torch.Tensor, m: torch.Tensor | int, n: torch.Tensor | int) -> torch.Tensor:
    """``round(p * m / 2**n)`` (halves to even) for int64 ``|p| < 2**62``, ``|m| < 2**31``, ``31 <= n <= 93``.

    The product ``p * m`` needs up to 93 bits, more than int64 holds, so it is formed in
    two int64 halves: ``p = p1 * 2**31 + p0`` (``0 <= p0 < 2**31``), ``p * m = (p1 * m +
    floor(p0 * m / 2**31)) * 2**31 + r0`` with ``0 <= r0 < 2**31``; call the first factor
    ``v``. Then ``p * m / 2**n = (v + r0 / 2**31) / 2**t`` with ``t = n - 31``: the quotient
    is ``q = v >> t``, and the discarded part is above, at or below the half exactly as
    ``(v - q * 2**t, r0)`` compares with ``(2**(t-1), 0)`` (``t >= 1``) or ``r0`` with
    ``2**30`` (``t == 0``). Exact for every input in range; used where a value on one fine
    scale is multiplied by a value on another (hard-swish, the squeeze-excitation product)
    and for sums wider than int32.
    """
    if p.dtype != torch.int64:
        raise TypeError(f"requantize_wide expects an int64 tensor, got {p.dtype}")
    m = torch.as_tensor(m, dtype=torch.int64, device=p.device)
    n = torch.as_tensor(n, dtype=torch.int64, device=p.device)
    if m.dim() == 0:
        m = m.reshape(1)
    if bool((n < WIDE_SPLIT).any()) or bool((n > MAX_WIDE_SHIFT).any()):
        raise ValueError(f"requantize_wide needs shifts in {WIDE_SPLIT}..{MAX_WIDE_SHIFT}")
    low_mask = (1 << WIDE_SPLIT) - 1
    p1 = torch.bitwise_right_shift(p, WIDE_SPLIT)
    p0 = torch.bitwise_and(p, low_mask)
    low = p0 * m
    v = p1 * m + torch.bitwise_right_shift(low, WIDE_SPLIT)
    r0 = torch.bitwise_and(low, low_mask)
    t = n - WIDE_SPLIT
    q = torch.bitwise_right_shift(v, t)
    r = v - torch.bitwise_left_shift(q, t)
    wide = t >= 1
    half_r = torch.where(wide, torch.bitwise_left_shift(torch.ones_like(t), (t - 1).clamp(min=0)), torch.zeros_like(t))
    half_0 = torch.where(wide, torch.zeros_like(t), torch.full_like(t, 1 << (WIDE_SPLIT - 1)))
    above = (r > half_r) | ((r == half_r) & (r0 > half_0))
    tie = (r == half_r) & (r0 == half_0)
    return q + (above | (tie & (q.bitwise_and(1) == 1))).to(torch.int64)
