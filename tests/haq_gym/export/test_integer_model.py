"""Integer export of MobileNetV2: integer-only execution, agreement with the fake-quant model, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from haq_gym.export.build import ExportError, export_integer_model
from haq_gym.export.compare import compare_models, fake_quant_input, float64_reference
from haq_gym.export.integer_guard import FloatingPointOperation, integer_only
from haq_gym.export.integer_model import ConvOp, IntegerModel, IntegerOverflow, Requant, RequantOp, conv2d_int
from haq_gym.quant import wrap_model
from haq_gym.quant.grid import QuantGrid

LAYERS = 53


def mixed_policy(seed: int, low: int = 2, high: int = 8) -> list[list[int]]:
    """HAQ-shaped random policy: first ``[8, -1]``, last ``[8, 8]``, the rest in ``[low, high]``."""
    gen = torch.Generator().manual_seed(seed)
    return [[8, -1]] + torch.randint(low, high + 1, (LAYERS - 2, 2), generator=gen).tolist() + [[8, 8]]


W4A4 = [[8, -1]] + [[4, 4]] * (LAYERS - 2) + [[8, 8]]


@pytest.fixture(scope="module")
def w4a4(make_quantized, digits):
    model, named = make_quantized(W4A4)
    return model, named, export_integer_model(model, named, digits["calib"])


@pytest.mark.parametrize(
    "cin,cout,k,stride,padding,groups",
    [(5, 7, 3, 1, 1, 1), (6, 6, 3, 2, 1, 6), (4, 8, 1, 1, 0, 1), (6, 9, 3, 1, 0, 3), (3, 4, 3, 2, 1, 1)],
)
def test_conv2d_int_equals_the_exact_convolution(cin, cout, k, stride, padding, groups) -> None:
    gen = torch.Generator().manual_seed(cin * 100 + cout)
    x = torch.randint(-128, 128, (2, cin, 9, 8), generator=gen, dtype=torch.int32)
    w = torch.randint(-8, 8, (cout, cin // groups, k, k), generator=gen, dtype=torch.int32)
    want = F.conv2d(x.double(), w.double(), stride=stride, padding=padding, groups=groups)  # exact: small integers
    got = conv2d_int(x, w, stride, padding, groups)
    assert got.dtype == torch.int32 and torch.equal(got.double(), want)


def test_identical_predictions_on_the_whole_test_split(w4a4, digits) -> None:
    """W4A4: the integer model predicts exactly what the fake-quant model computes.

    The referee is the fake-quant model evaluated in float64 (same quantized weights):
    this random-feature model is so sensitive that its own float32 evaluation differs
    from float64 on a few images (near-tie codes flip and the flips spread).
    """
    model, named, im = w4a4
    images = digits["test_x"]
    _, pred = im.predict(images)
    exact, _ = float64_reference(model, named)
    with torch.no_grad():
        f64 = exact(fake_quant_input(im, images, torch.float64)).argmax(dim=1)
        f32 = model(fake_quant_input(im, images)).argmax(dim=1)
    assert len(images) == 360
    assert torch.equal(pred, f64)
    # float32 is a noisier evaluation of the same model, not a different one
    assert int((pred != f32).sum()) <= int((f64 != f32).sum()) <= 4


@pytest.mark.parametrize("policy", ["w4a4", "mixed"])
def test_per_layer_codes_agree_except_near_ties(policy, w4a4, make_quantized, digits) -> None:
    if policy == "w4a4":
        model, named, im = w4a4
    else:  # every width 2..8, odd ones included
        model, named = make_quantized(mixed_policy(0))
        im = export_integer_model(model, named, digits["calib"])
    report = compare_models(model, named, im, digits["test_x"][:8], digits["test_y"][:8])
    assert len(report.layers) == LAYERS
    assert report.forced_code_agreement >= 0.99999
    assert report.unexplained_mismatches == []
    assert report.forced_prediction_agreement == 1.0 and report.prediction_agreement == 1.0
    assert report.max_logit_diff < 1e-3


def test_forward_runs_on_integer_tensors_only(w4a4, digits) -> None:
    _, _, im = w4a4
    codes = im.quantize_input(digits["test_x"][:4])
    with integer_only() as guard:  # an outer guard sees every op of the forward
        logits, env = im.forward(codes, record=True)
    assert guard.ops > 200
    assert logits.dtype == torch.int32 and all(not t.is_floating_point() for t in env.values())
    with pytest.raises(FloatingPointOperation, match="float"), integer_only():
        codes.float()
    with pytest.raises(FloatingPointOperation, match="Python float"), integer_only():
        codes * 0.5
    with pytest.raises(TypeError, match="int32 codes"):
        im.forward(codes.long())


def test_every_layer_is_a_conv_op_with_int32_bias(w4a4) -> None:
    _, named, im = w4a4
    convs = [op for op in im.ops if isinstance(op, ConvOp)]
    assert [im.layers[op.layer].name for op in convs] == [n for n, _ in named]
    assert all(op.bias.dtype == torch.int32 for op in convs)
    assert convs[-1].requant is None and convs[-1].kind == "linear"  # int32 logits
    for op in convs[:-1]:
        assert op.requant.multiplier.abs().max() < 2**31


def test_lsq_plus_offsets_are_folded_exactly(make_quantized, digits) -> None:
    model, named = make_quantized(mixed_policy(1, low=3), family="lsq+")
    # LSQ+ starts the offset of a ReLU6 output at 0; training moves it. Move it by hand on
    # the depthwise convs' inputs, whose zero padding the offset must not reach.
    with torch.no_grad():
        for _, layer in named:
            if isinstance(layer, nn.Conv2d) and layer.groups > 1:
                q = layer.input_quantizer
                q.offset.fill_(-0.37 * float(q.current_step()))
    im = export_integer_model(model, named, digits["calib"])
    assert any(op.input_offset is not None and op.padding for op in im.ops if isinstance(op, ConvOp))
    report = compare_models(model, named, im, digits["test_x"][:8], digits["test_y"][:8])
    assert report.forced_code_agreement >= 0.9999
    assert report.unexplained_mismatches == []
    assert report.forced_prediction_agreement == 1.0


def test_power_of_two_model_with_folded_bn_requantises_by_shifts(make_quantized, digits) -> None:
    model, named = make_quantized(mixed_policy(2, low=4), family="pot", fold_bn=True)
    im = export_integer_model(model, named, digits["calib"])
    requants = [op.requant for op in im.ops if getattr(op, "requant", None) is not None]
    assert len(requants) == im.meta["requants"] == im.meta["shift_only_requants"]
    assert all(r.is_shift for r in requants)
    assert im.input_grid.power_of_two
    report = compare_models(model, named, im, digits["test_x"][:8], digits["test_y"][:8])
    # Power-of-two grids make exact ties common; the remaining differences are those ties.
    assert report.forced_code_agreement >= 0.99
    assert report.unexplained_mismatches == []


def test_unsupported_models_and_policies_raise(make_quantized, digits) -> None:
    model, named = make_quantized(mixed_policy(3), family="lsq")
    named[5][1].set_bits(4, -1)
    with pytest.raises(ExportError, match="unquantized input"):
        export_integer_model(model, named, digits["calib"])
    named[5][1].set_bits(4, 4)
    named[7][1].set_bits(12, 4)
    with pytest.raises(ExportError, match="12-bit weights"):
        export_integer_model(model, named, digits["calib"])
    named[7][1].set_bits(-1, 4)
    with pytest.raises(ExportError, match="unquantized weights"):
        export_integer_model(model, named, digits["calib"])
    plain = nn.Sequential(nn.Conv2d(3, 4, 3))
    with pytest.raises(ExportError, match="MobileNetV2"):
        export_integer_model(plain, wrap_model(plain), digits["calib"])


def test_int32_overflow_raises_instead_of_wrapping() -> None:
    grid = QuantGrid(step=1.0, qmin=-127, qmax=127)
    fine = QuantGrid(step=1.0, qmin=-(2**31), qmax=2**31 - 1)
    op = RequantOp("t0", "t1", 2**31 - 100, Requant(torch.tensor([1]), torch.tensor([1]), -127, 127))
    im = IntegerModel(grid, [], [op], {"t0": grid, "t1": fine}, {}, "t0", "t1", 1.0)
    with pytest.raises(IntegerOverflow, match="outside int32"):
        im.forward(torch.full((1, 3, 2, 2), 120, dtype=torch.int32))
    assert im.forward(torch.full((1, 3, 2, 2), -120, dtype=torch.int32))[0].max() == 127
