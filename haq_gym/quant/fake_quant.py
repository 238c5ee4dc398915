"""Uniform fake quantization arithmetic (no state): round-to-grid with a straight-through estimator.

Conventions (HAQ's linear quantization):
- weights: symmetric, per tensor, ``2**(b-1) - 1`` levels on each side of zero, clip ``t``;
- activations: unsigned ``[0, alpha]`` with ``2**b - 1`` steps when the input is
  non-negative (after ReLU6), else signed ``[-alpha, alpha]`` with ``2**(b-1) - 1`` levels
  on each side.
"""

from __future__ import annotations

import torch


def weight_qmax(bits: int) -> int:
    """Largest integer level of a symmetric ``bits``-bit weight grid."""
    if bits < 2:
        raise ValueError(f"symmetric weight quantization needs at least 2 bits, got {bits}")
    return int(2 ** (bits - 1)) - 1


def activation_levels(bits: int, signed: bool) -> tuple[int, int]:
    """Integer range ``(qmin, qmax)`` of a ``bits``-bit activation grid."""
    if bits < 1 or (signed and bits < 2):
        raise ValueError(f"{'signed' if signed else 'unsigned'} activations need more than {bits} bit(s)")
    if signed:
        q = 2 ** (bits - 1) - 1
        return -q, q
    return 0, 2**bits - 1


def fake_quantize(x: torch.Tensor, scale: float, qmin: int, qmax: int, ste: bool) -> torch.Tensor:
    """``scale * clamp(round(x / scale), qmin, qmax)``.

    With ``ste`` the result carries a straight-through gradient (identity inside the clip
    range, zero outside); without it the arithmetic is done with fewer temporaries, for
    inference.
    """
    if not ste:
        return x.mul(1.0 / scale).round_().clamp_(qmin, qmax).mul_(scale)
    clipped = torch.clamp(x, qmin * scale, qmax * scale)
    return clipped + (torch.round(clipped / scale) * scale - clipped).detach()


def mse_optimal_clip(sample: torch.Tensor, qmin: int, qmax: int, grid: int = 64) -> float:
    """Clip value ``c`` (scale ``c / qmax``) minimising the mean squared quantization error of ``sample``.

    Candidates are ``grid`` evenly spaced fractions of ``max|sample|``, from 1/grid to 1.
    HAQ picks low-bit clip values by a divergence between histograms; minimising the
    error directly is simpler, fast on a subsample, and never worse than no clipping,
    since the full range is one of the candidates.
    """
    amax = float(sample.abs().max()) if sample.numel() else 0.0
    if amax == 0.0:
        return 1.0
    fractions = torch.arange(1, grid + 1, dtype=torch.float32, device=sample.device) / grid
    clips = amax * fractions
    scales = (clips / qmax)[:, None]
    xs = sample.reshape(1, -1).float()
    err = (torch.clamp(torch.round(xs / scales), qmin, qmax) * scales - xs).pow_(2).mean(dim=1)
    return float(clips[int(torch.argmin(err))])
