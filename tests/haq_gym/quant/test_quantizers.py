"""Linear quantizers, layer wrappers and model wrapping."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from haq_gym.models import build_model
from haq_gym.quant import LinearActivationQuantizer, LinearWeightQuantizer, apply_policy, calibrate, wrap_model
from haq_gym.quant.fake_quant import activation_levels, fake_quantize, mse_optimal_clip, weight_qmax


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_weight_quantizer_uses_symmetric_grid(bits: int) -> None:
    torch.manual_seed(0)
    w = torch.randn(64, 32)
    q = LinearWeightQuantizer()
    q.set_bits(bits)
    q.eval()
    out = q(w)
    levels = torch.unique(out)
    assert len(levels) <= 2 * weight_qmax(bits) + 1
    step = q.clip(w, bits) / weight_qmax(bits)
    assert torch.allclose(out / step, torch.round(out / step), atol=1e-4)
    assert out.abs().max() <= q.clip(w, bits) + 1e-6


def test_weight_error_shrinks_with_bits() -> None:
    torch.manual_seed(0)
    w = torch.randn(256, 64)
    q = LinearWeightQuantizer().eval()
    errors = []
    for bits in range(2, 9):
        q.set_bits(bits)
        errors.append(float((q(w) - w).pow(2).mean()))
    assert all(a > b for a, b in itertools.pairwise(errors))


def test_weight_cache_is_reused_and_invalidated_by_in_place_updates() -> None:
    w = nn.Parameter(torch.randn(16, 8))
    q = LinearWeightQuantizer().eval()
    q.set_bits(4)
    first = q(w)
    assert q(w) is first
    with torch.no_grad():
        w.mul_(2.0)
    second = q(w)
    assert second is not first
    assert not torch.equal(first, second)


def test_weight_ste_gradient_is_identity() -> None:
    w = nn.Parameter(torch.randn(8, 8))
    q = LinearWeightQuantizer().train()
    q.set_bits(3)
    q(w).sum().backward()
    inside = w.detach().abs() <= q.clip(w, 3)
    assert torch.equal(w.grad[inside], torch.ones_like(w.grad[inside]))


def test_mse_clip_beats_max_clip_on_gaussian_at_low_bits() -> None:
    torch.manual_seed(0)
    x = torch.randn(20000)
    clip = mse_optimal_clip(x, -1, 1)
    assert clip < float(x.abs().max())

    def err(c: float) -> float:
        return float((fake_quantize(x, c, -1, 1, ste=False) - x).pow(2).mean())

    assert err(clip) < err(float(x.abs().max()))


def test_activation_quantizer_detects_sign_and_needs_calibration() -> None:
    q = LinearActivationQuantizer()
    q.set_bits(4)
    with pytest.raises(RuntimeError, match="calibrat"):
        q(torch.rand(4))
    q.observing = True
    q(torch.rand(1000) * 6)
    q.observing = False
    assert not q.signed
    out = q(torch.rand(1000) * 6)
    assert out.min() >= 0 and len(torch.unique(out)) <= 2**4
    q.reset_calibration()
    q.observing = True
    q(torch.randn(1000))
    q.observing = False
    assert q.signed
    assert q(torch.randn(1000)).min() < 0
    assert activation_levels(4, True) == (-7, 7)


def test_wrap_model_finds_53_layers_and_keeps_state_dict_keys() -> None:
    model = build_model("mobilenetv2", num_classes=10, width_mult=0.35)
    keys = set(model.state_dict())
    layers = wrap_model(model)
    assert len(layers) == 53
    assert layers[0][0] == "features.0.0" and layers[-1][0] == "classifier.1"
    assert set(model.state_dict()) == keys
    assert len(wrap_model(model)) == 53


def test_calibration_marks_linear_bottleneck_inputs_signed_and_policy_changes_output() -> None:
    torch.manual_seed(0)
    model = build_model("mobilenetv2", num_classes=10, width_mult=0.35).eval()
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
    layers = [m for _, m in wrap_model(model)]
    calibrate(model, layers, x)
    # the image input, the 16 expansion convs' inputs and the last 1x1 conv's input can be negative
    assert sum(layer.input_quantizer.signed for layer in layers) == 18

    def rel_err(out: torch.Tensor) -> float:
        return float((out - ref).norm() / ref.norm())

    apply_policy(layers, [[-1, -1]] * 53)
    with torch.no_grad():
        assert rel_err(model(x)) < 1e-5
        apply_policy(layers, [[8, -1]] + [[8, 8]] * 51 + [[8, 8]])
        err8 = rel_err(model(x))
        apply_policy(layers, [[8, -1]] + [[2, 2]] * 51 + [[8, 8]])
        err2 = rel_err(model(x))
    assert 0 < err8 < 0.2 < err2
    with pytest.raises(ValueError, match="53 quantizable layers"):
        apply_policy(layers, [[4, 4]] * 52)
    with pytest.raises(ValueError, match="at least 2 bits"):
        apply_policy(layers, [[8, -1]] + [[1, 4]] * 51 + [[8, 8]])


def test_folding_the_input_step_into_the_weight_matches_plain_fake_quantization() -> None:
    torch.manual_seed(0)
    conv = wrap_model(nn.Sequential(nn.Conv2d(8, 16, 3, padding=1)))[0][1]
    x = torch.rand(4, 8, 10, 10) * 6
    calibrate(conv, [conv], x)
    conv.set_bits(4, 3)
    conv.eval()
    with torch.no_grad():
        folded = conv(x)
        plain = nn.functional.conv2d(conv.input_quantizer(x), conv.weight_quantizer(conv.weight), conv.bias, padding=1)
    assert torch.allclose(folded, plain, atol=1e-5, rtol=1e-5)
