"""Batch-level training augmentation: random translation and horizontal flip.

Working on whole normalised batches (instead of per-item PIL transforms) keeps training
reproducible from a ``torch.Generator`` and lets it run on the GPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def random_translate_flip(
    x: torch.Tensor,
    generator: torch.Generator,
    *,
    pad: int,
    hflip: bool,
    fill: Sequence[float],
) -> torch.Tensor:
    """Shift every image by its own random (dy, dx) in [-pad, pad], then flip half when ``hflip``.

    This equals torchvision's ``RandomCrop(size, padding=pad)`` followed by
    ``RandomHorizontalFlip()`` applied per image: pixels shifted in from outside the
    image get ``fill`` (per channel; callers pass the normalised value of a black pixel,
    like RandomCrop's zero padding of the raw image). All images are done in one
    gather, with no loop over the batch. Returns a new tensor with the shape, dtype,
    device and memory format (contiguous or channels_last) of ``x``.
    """
    if x.ndim != 4:
        raise ValueError(f"expected a batch [N,C,H,W], got shape {tuple(x.shape)}")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    n, channels, height, width = x.shape
    if len(fill) != channels:
        raise ValueError(f"fill needs one value per channel ({channels}), got {len(fill)}")

    shifts = torch.randint(-pad, pad + 1, (n, 2), generator=generator, device=generator.device).to(x.device)
    rows = torch.arange(height, device=x.device).unsqueeze(0) - shifts[:, :1]  # [N,H] source rows
    cols = torch.arange(width, device=x.device).unsqueeze(0).expand(n, width)  # [N,W] output cols
    if hflip:
        flip = torch.rand(n, generator=generator, device=generator.device).to(x.device) < 0.5
        cols = torch.where(flip.unsqueeze(1), width - 1 - cols, cols)
    cols = cols - shifts[:, 1:]  # source cols

    row_ok = (rows >= 0) & (rows < height)
    col_ok = (cols >= 0) & (cols < width)
    gathered = x[
        torch.arange(n, device=x.device).view(n, 1, 1, 1),
        torch.arange(channels, device=x.device).view(1, channels, 1, 1),
        rows.clamp(0, height - 1).view(n, 1, height, 1),
        cols.clamp(0, width - 1).view(n, 1, 1, width),
    ]
    inside = row_ok.view(n, 1, height, 1) & col_ok.view(n, 1, 1, width)
    fill_value = torch.tensor(fill, dtype=x.dtype, device=x.device).view(1, channels, 1, 1)
    out = torch.where(inside, gathered, fill_value)
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        out = out.contiguous(memory_format=torch.channels_last)
    return out
