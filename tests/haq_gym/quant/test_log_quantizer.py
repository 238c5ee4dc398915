"""Seed 004's logarithmic 8-bit weight quantizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from haq_gym.quant import QuantConv2d
from haq_gym.quant.log_quantizer import ZERO_CODE, LogWeightQuantizer, log8_codes, log8_decode, log8_to_linear


def mimic_hisi(x: np.ndarray, delta: float = 0.0625) -> np.ndarray:
    """Seed 004's reference, transcribed (NumPy; ``log2(0)`` warnings silenced)."""
    x = np.float64(x)
    shp = x.shape
    x = x.flatten()
    x_abs = np.abs(x)
    with np.errstate(divide="ignore"):
        x_log2 = np.log2(x_abs)
    x_sign = np.sign(x)
    x_abs_max = np.max(x_log2)
    max_bound = np.floor(x_abs_max / delta)
    min_bound = max_bound - 127
    clip = np.clip(np.round(x_log2 / delta), min_bound, max_bound)
    modify_mask0 = np.logical_and(x_sign == -1, clip == min_bound)
    clip[modify_mask0] = min_bound + 1
    x_res = 2 ** (clip * delta) * x_sign
    modify_mask1 = np.logical_and(x_sign == -1, x_log2 / delta <= max_bound - 126 - 16)
    modify_mask2 = np.logical_and(x_sign == 1, x_log2 / delta <= max_bound - 127 - 16)
    x_res[np.logical_or(modify_mask1, modify_mask2)] = 0
    return x_res.reshape(*shp)


def sample(seed: int) -> torch.Tensor:
    """Weights over ~12 octaves, both signs, exact zeros and values around the flush thresholds."""
    gen = torch.Generator().manual_seed(seed)
    mags = torch.pow(2.0, -12 * torch.rand(4000, generator=gen, dtype=torch.float64))
    signs = torch.where(torch.rand(4000, generator=gen) < 0.5, -1.0, 1.0).double()
    w = mags * signs
    w[:5] = 0.0
    return w.reshape(40, 100)


def levels(values: np.ndarray) -> np.ndarray:
    """Signed level ``sign * (16 * log2|v| + 1000)`` of each value, 0 for zeros: what the format stores."""
    with np.errstate(divide="ignore", invalid="ignore"):  # log2(0) = -inf, 0 * -inf = nan: masked below
        level = np.rint(16 * np.log2(np.abs(values))) + 1000
        return np.where(values == 0, 0, np.sign(values) * level)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_forward_equals_seed_004_reference(seed: int) -> None:
    w = sample(seed)
    q = LogWeightQuantizer().eval()
    q.set_bits(8)
    got, want = q(w).numpy(), mimic_hisi(w.numpy())
    np.testing.assert_array_equal(levels(got), levels(want))  # same sign, level and zero flush
    np.testing.assert_allclose(got, want, rtol=4e-16, atol=0)  # torch.pow and NumPy's 2**y may differ by an ulp


def test_codes_are_sign_magnitude_bytes_and_decode_exactly() -> None:
    w = sample(3)
    codes, top = log8_codes(w)
    assert codes.dtype == torch.int32 and int(codes.min()) >= 0 and int(codes.max()) <= 255
    assert bool((codes[w == 0] == ZERO_CODE).all())
    negative = codes[(w < 0) & (codes != ZERO_CODE)]
    assert int((negative & 0x7F).min()) >= 1  # level 0 belongs to the positive side
    assert int((codes[w > 0] & 0x80).max()) in (0, 0x80)  # positives are k or flushed to zero
    assert top == int(np.floor(16 * np.log2(w.abs().max().item())))
    np.testing.assert_array_equal(levels(log8_decode(codes, top, torch.float64).numpy()), levels(mimic_hisi(w.numpy())))
    q = LogWeightQuantizer().eval()
    q.set_bits(8)
    assert torch.equal(q(w.float()), log8_decode(*log8_codes(w.float())))  # the forward is the decoded codes


def test_linear_decoding_is_exact_to_its_fraction_bits() -> None:
    w = sample(4)
    codes, top = log8_codes(w)
    for bits in (8, 12, 14):
        linear, step = log8_to_linear(codes, top, bits)
        assert linear.dtype == torch.int32 and int(linear.abs().max()) <= 2**bits
        err = (linear.double() * step - log8_decode(codes, top, torch.float64)).abs().max()
        assert float(err) <= 0.5 * step * (1 + 1e-12)


def test_straight_through_gradient_and_bit_width() -> None:
    q = LogWeightQuantizer().train()
    q.set_bits(8)
    w = torch.nn.Parameter(torch.randn(8, 8))
    q(w).sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))
    with pytest.raises(ValueError, match="8-bit codes"):
        q.set_bits(4)
    q.set_bits(None)
    assert q(w) is w
    with pytest.raises(TypeError, match="no uniform grid"):
        q.grid(w)


def test_plugs_into_the_layer_wrapper() -> None:
    layer = QuantConv2d.from_float(torch.nn.Conv2d(3, 4, 3))
    layer.set_quantizers(LogWeightQuantizer(), layer.input_quantizer)
    layer.set_bits(8, -1)
    layer.eval()
    x = torch.randn(1, 3, 5, 5)
    want = torch.nn.functional.conv2d(x, log8_decode(*log8_codes(layer.weight)), layer.bias)
    assert layer.w_bit == 8 and torch.allclose(layer(x), want)
