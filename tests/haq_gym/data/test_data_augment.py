"""Batch-level augmentation: determinism, semantics, flip policy, memory formats."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.utils.data import TensorDataset

from haq_gym.data import DataBundle, load_dataset

MEAN = (0.5, 0.4, 0.3)
STD = (0.25, 0.2, 0.1)


def make_bundle(*, hflip: bool, pad: int) -> DataBundle:
    empty = TensorDataset(torch.zeros(0, 3, 8, 8))
    return DataBundle(
        name="synthetic",
        num_classes=2,
        image_size=8,
        mean=MEAN,
        std=STD,
        train=empty,
        search_train=empty,
        search_val=empty,
        test=empty,
        hflip=hflip,
        pad=pad,
    )


def batch(n: int = 16, size: int = 8) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(123))


def reference(image: torch.Tensor, dy: int, dx: int, flip: bool) -> torch.Tensor:
    """Pad with the black fill, crop shifted by (dy, dx), optionally flip: the per-image definition."""
    _, h, w = image.shape
    pad = max(abs(dy), abs(dx))
    fill = torch.tensor([-m / s for m, s in zip(MEAN, STD, strict=True)]).view(3, 1, 1)
    padded = fill.expand(3, h + 2 * pad, w + 2 * pad).clone()
    padded[:, pad : pad + h, pad : pad + w] = image
    out = padded[:, pad - dy : pad - dy + h, pad - dx : pad - dx + w]
    return out.flip(-1) if flip else out


def matches_some_transform(out: torch.Tensor, image: torch.Tensor, pad: int, flips: tuple[bool, ...]) -> bool:
    return any(
        torch.allclose(out, reference(image, dy, dx, flip))
        for dy in range(-pad, pad + 1)
        for dx in range(-pad, pad + 1)
        for flip in flips
    )


def test_same_generator_seed_gives_same_result() -> None:
    bundle, x = make_bundle(hflip=True, pad=2), batch()
    first = bundle.augment(x, torch.Generator().manual_seed(7))
    second = bundle.augment(x, torch.Generator().manual_seed(7))
    other = bundle.augment(x, torch.Generator().manual_seed(8))
    assert torch.equal(first, second)
    assert not torch.equal(first, other)


def test_changes_batch_keeps_shape_dtype_and_input() -> None:
    bundle, x = make_bundle(hflip=True, pad=2), batch()
    before = x.clone()
    out = bundle.augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert not torch.equal(out, x)
    assert torch.equal(x, before)


@pytest.mark.parametrize("hflip", [False, True])
def test_each_image_is_a_shift_of_its_input_with_black_fill(hflip: bool) -> None:
    bundle, x = make_bundle(hflip=hflip, pad=2), batch()
    out = bundle.augment(x, torch.Generator().manual_seed(3))
    flips = (False, True) if hflip else (False,)
    assert all(matches_some_transform(o, i, 2, flips) for o, i in zip(out, x, strict=True))


def test_no_flip_without_hflip_and_flips_with_it() -> None:
    x = batch(n=64)
    unflipped = make_bundle(hflip=False, pad=0).augment(x, torch.Generator().manual_seed(0))
    assert torch.equal(unflipped, x)
    flipped = make_bundle(hflip=True, pad=0).augment(x, torch.Generator().manual_seed(0))
    is_flipped = [torch.equal(o, i.flip(-1)) for o, i in zip(flipped, x, strict=True)]
    is_same = [torch.equal(o, i) for o, i in zip(flipped, x, strict=True)]
    assert all(f != s for f, s in zip(is_flipped, is_same, strict=True))
    assert 10 < sum(is_flipped) < 54


def test_digits_never_flips() -> None:
    digits = load_dataset("digits")
    assert digits.hflip is False
    x = batch(n=32, size=32)
    no_shift = dataclasses.replace(digits, pad=0)
    assert torch.equal(no_shift.augment(x, torch.Generator().manual_seed(0)), x)


def test_channels_last_input_gives_same_values_and_format() -> None:
    bundle, x = make_bundle(hflip=True, pad=2), batch()
    x_cl = x.contiguous(memory_format=torch.channels_last)
    out = bundle.augment(x, torch.Generator().manual_seed(5))
    out_cl = bundle.augment(x_cl, torch.Generator().manual_seed(5))
    assert torch.equal(out, out_cl)
    assert out_cl.is_contiguous(memory_format=torch.channels_last)
    assert out.is_contiguous()


def test_half_precision_batch() -> None:
    bundle, x = make_bundle(hflip=True, pad=1), batch().half()
    out = bundle.augment(x, torch.Generator().manual_seed(5))
    assert out.dtype == torch.float16 and out.shape == x.shape
