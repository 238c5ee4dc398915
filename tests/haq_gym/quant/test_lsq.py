import math

import pytest
import torch
from torch import nn

from haq_gym.quant import apply_policy, calibrate, wrap_model
from haq_gym.quant.families import quantizer_family, reinitialize_learned_steps, set_quantizer_family
from haq_gym.quant.lsq import LSQPlusQuantizer, LSQQuantizer, PowerOfTwoQuantizer

# v / step = [-6, -1.4, 0.4, 1.1, 2.6, 10]: one value below the 3-bit signed range [-4, 3],
# four inside (rounding down and up) and one above.
VALUES = [-3.0, -0.7, 0.2, 0.55, 1.3, 5.0]
STEP = 0.5
COEF = [0.3, -1.2, 0.7, 2.0, -0.4, 1.5]  # loss = sum(COEF * output): distinct upstream gradients


def _weight_quantizer(bits=3, step=STEP):
    q = LSQQuantizer("weight")
    q.set_bits(bits)
    q.set_step(step)
    return q


def test_forward_clips_rounds_and_scales():
    q = _weight_quantizer()
    out = q(torch.tensor(VALUES))
    assert out.tolist() == pytest.approx([-2.0, -0.5, 0.0, 0.5, 1.5, 1.5])


def test_gradients_match_hand_computed_lsq_formulas():
    q = _weight_quantizer()
    v = torch.tensor(VALUES, requires_grad=True)
    (q(v) * torch.tensor(COEF)).sum().backward()
    # d out / d v: 1 strictly inside the clip range, 0 below and above.
    assert v.grad.tolist() == pytest.approx([0.0, COEF[1], COEF[2], COEF[3], COEF[4], 0.0])
    # d out / d step: qmin below, round(v/s) - v/s inside, qmax above; times g = 1/sqrt(N * Qp).
    per_element = [-4.0, -1 - (-1.4), 0 - 0.4, 1 - 1.1, 3 - 2.6, 3.0]
    g = 1.0 / math.sqrt(len(VALUES) * 3)
    expected = g * sum(c * d for c, d in zip(COEF, per_element, strict=True))
    assert q.step.grad.item() == pytest.approx(expected, rel=1e-5)


def test_activation_gradient_scale_counts_features_of_one_sample():
    q = LSQQuantizer("activation")
    q.set_bits(2)  # unsigned: [0, 3]
    q.set_step(0.5)
    x = torch.tensor([[0.2, 0.9, 2.0], [0.6, 1.6, -0.3]], requires_grad=True)
    q(x).sum().backward()
    u = (x / 0.5).detach()
    per = torch.where(u < 0, torch.tensor(0.0), torch.where(u > 3, torch.tensor(3.0), torch.round(u) - u))
    g = 1.0 / math.sqrt(3 * 3)  # 3 features per sample, Qp = 3 (not 6 = whole batch)
    assert q.step.grad.item() == pytest.approx(g * per.sum().item(), rel=1e-5)
    assert x.grad.tolist() == [[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]  # u = 4.0, 3.2 and -0.6 are clipped


def test_lsq_plus_offset_gradient_is_one_only_where_clipped():
    q = LSQPlusQuantizer("activation")
    q.set_bits(2)
    q.set_step(0.5)
    with torch.no_grad():
        q.offset.fill_(-0.25)
    x = torch.tensor([[-1.0, 0.1, 0.6, 3.0]], requires_grad=True)  # (x - beta)/s = -1.5, 0.7, 1.7, 6.5
    out = q(x)
    assert out.tolist()[0] == pytest.approx([-0.25, 0.25, 0.75, 1.25])
    (out * torch.tensor(COEF[:4])).sum().backward()
    g = 1.0 / math.sqrt(4 * 3)
    assert q.offset.grad.item() == pytest.approx(g * (COEF[0] + COEF[3]), rel=1e-5)
    assert x.grad.tolist()[0] == pytest.approx([0.0, COEF[1], COEF[2], 0.0])


def test_power_of_two_step_is_rounded_and_its_exponent_learns():
    q = PowerOfTwoQuantizer("weight")
    q.set_bits(3)
    q.set_step(2**-1.2)  # log2_step = -1.2 rounds to -1: step 0.5
    assert q.grid().step == 0.5 and q.grid().power_of_two
    v = torch.tensor(VALUES)
    (q(v) * torch.tensor(COEF)).sum().backward()
    per_element = [-4.0, 0.4, -0.4, -0.1, 0.4, 3.0]
    g = 1.0 / math.sqrt(len(VALUES) * 3)
    d_step = g * sum(c * d for c, d in zip(COEF, per_element, strict=True))
    assert q.log2_step.grad.item() == pytest.approx(d_step * 0.5 * math.log(2), rel=1e-5)


def test_init_rule_and_bit_change_keeps_clip_range():
    w = torch.randn(64, 32)
    q = LSQQuantizer("weight")
    q.set_bits(4)
    q(w)
    assert q.step.item() == pytest.approx(2 * w.abs().mean().item() / math.sqrt(7), rel=1e-5)
    clip = q.step.item() * 7
    q.set_bits(2)
    assert q.step.item() * 1 == pytest.approx(clip, rel=1e-5)
    q.reinitialize()
    q(w)
    assert q.step.item() == pytest.approx(2 * w.abs().mean().item() / math.sqrt(1), rel=1e-5)


def test_bad_bits_and_roles_are_rejected():
    with pytest.raises(ValueError, match=r"weight bits must be an integer in \[2, 16\]"):
        LSQQuantizer("weight").set_bits(1)
    with pytest.raises(ValueError, match="role"):
        LSQQuantizer("bias")
    with pytest.raises(ValueError, match="offsets are for activations"):
        LSQPlusQuantizer("weight")


@pytest.mark.parametrize("family", ["lsq", "lsq+", "pot"])
def test_family_plugs_into_wrappers_and_state_dict_round_trips(family):
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU6(),
        nn.Conv2d(8, 8, 1),
        nn.Flatten(),
        nn.Linear(8 * 16, 4),
    )
    named = wrap_model(net)
    layers = [m for _, m in named]
    set_quantizer_family(layers, family)
    apply_policy(layers, [[8, -1], [3, 4], [8, 8]])
    x = torch.randn(16, 3, 4, 4)
    calibrate(net, layers, x)
    assert quantizer_family(layers) == family
    net.eval()
    out = net(x)
    assert not layers[1].input_quantizer.is_signed  # after ReLU6: unsigned grid
    copy = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU6(),
        nn.Conv2d(8, 8, 1),
        nn.Flatten(),
        nn.Linear(8 * 16, 4),
    )
    copy_layers = [m for _, m in wrap_model(copy)]
    set_quantizer_family(copy_layers, family)
    apply_policy(copy_layers, [[8, -1], [3, 4], [8, 8]])
    copy.load_state_dict(net.state_dict())
    copy.eval()
    torch.testing.assert_close(copy(x), out)
    reinitialize_learned_steps(layers)
    assert all(m.input_quantizer.is_initialized for m in layers[1:])


def _textbook_lsq(v, step, offset, g, qmin, qmax):
    """LSQ as the paper composes it: gradient-scaled step, clamp, straight-through round."""

    def scaled(x):
        return (x - x * g).detach() + x * g

    def round_ste(x):
        return (torch.round(x) - x).detach() + x

    s = scaled(step)
    if offset is None:
        return round_ste(torch.clamp(v / s, qmin, qmax)) * s
    b = scaled(offset)
    return round_ste(torch.clamp((v - b) / s, qmin, qmax)) * s + b


@pytest.mark.parametrize("with_offset", [False, True])
def test_fused_function_matches_textbook_composition(with_offset):
    from haq_gym.quant.lsq import LSQFunction

    torch.manual_seed(1)
    v1 = (torch.randn(4, 6, 5, 5) * 2).requires_grad_()
    v2 = v1.detach().clone().requires_grad_()
    s1, s2 = torch.tensor(0.3, requires_grad=True), torch.tensor(0.3, requires_grad=True)
    b1 = torch.tensor(-0.4, requires_grad=True) if with_offset else None
    b2 = torch.tensor(-0.4, requires_grad=True) if with_offset else None
    up = torch.randn(4, 6, 5, 5)
    out1 = LSQFunction.apply(v1, s1, b1, 0.05, -8, 7)
    out2 = _textbook_lsq(v2, s2, b2, 0.05, -8, 7)
    torch.testing.assert_close(out1, out2)
    (out1 * up).sum().backward()
    (out2 * up).sum().backward()
    torch.testing.assert_close(v1.grad, v2.grad)
    torch.testing.assert_close(s1.grad, s2.grad, rtol=1e-4, atol=1e-6)
    if with_offset:
        torch.testing.assert_close(b1.grad, b2.grad, rtol=1e-4, atol=1e-6)


def test_a_step_driven_through_zero_quantizes_with_its_magnitude():
    q = _weight_quantizer()
    with torch.no_grad():
        q.step.fill_(-STEP)
    assert q(torch.tensor(VALUES)).tolist() == pytest.approx([-2.0, -0.5, 0.0, 0.5, 1.5, 1.5])
    assert q.grid().step == pytest.approx(STEP)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_ends_of_the_range_pass_gradients_like_clamp(dtype):
    from haq_gym.quant.lsq import LSQFunction

    # u = v / 0.5 = [-4.0, 3.0] are exactly qmin and qmax of 3 signed bits; the next
    # representable values outwards are clipped.
    ends = torch.tensor([-2.0, 1.5], dtype=dtype)
    beyond = torch.nextafter(ends, torch.tensor([-math.inf, math.inf], dtype=dtype))
    v = torch.cat([ends, beyond]).requires_grad_()
    step = torch.tensor(0.5, dtype=dtype, requires_grad=True)
    LSQFunction.apply(v, step, None, 1.0, -4, 3).sum().backward()
    assert v.grad.tolist() == [1.0, 1.0, 0.0, 0.0]
    # d/dstep: round(u) - u = 0 at the ends, qmin / qmax beyond them.
    assert step.grad.item() == pytest.approx(-4.0 + 3.0, abs=1e-2)


def test_channels_last_gradients_match_contiguous():
    from haq_gym.quant.lsq import LSQFunction

    torch.manual_seed(2)
    v = torch.randn(2, 8, 4, 4) * 2
    up = torch.randn(2, 8, 4, 4)
    grads = []
    for fmt in (torch.contiguous_format, torch.channels_last):
        x = v.clone().contiguous(memory_format=fmt).requires_grad_()
        s = torch.tensor(0.3, requires_grad=True)
        (LSQFunction.apply(x, s, None, 0.1, 0, 15) * up.contiguous(memory_format=fmt)).sum().backward()
        grads.append((x.grad, s.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_lsq_plus_on_a_signed_input_starts_where_signed_lsq_does(bits):
    torch.manual_seed(3)
    x = torch.randn(16, 8, 4, 4) * 0.5 - 0.1
    x[0, 0, 0, 0] = -20.0  # one outlier: LSQ's rule on x - min(x) would make the grid far too coarse
    plain, plus = LSQQuantizer("activation"), LSQPlusQuantizer("activation")
    for q in (plain, plus):
        q.observing = True
        q(x)
        q.observing = False
        q.set_bits(bits)
    assert plain.is_signed and not plus.is_signed
    assert plus.current_step().item() == pytest.approx(plain.current_step().item())
    assert plus.offset.item() == pytest.approx(-(2 ** (bits - 1)) * plain.current_step().item())
    torch.testing.assert_close(plus(x), plain(x))


@pytest.mark.parametrize(
    "make",
    [
        lambda: LSQQuantizer("weight"),
        lambda: LSQQuantizer("activation"),
        lambda: LSQPlusQuantizer("activation"),
        lambda: PowerOfTwoQuantizer("weight"),
    ],
    ids=["lsq-weight", "lsq-activation", "lsq+", "pot"],
)
def test_quantizer_forward_and_backward_trace_as_one_graph(make):
    """No device sync (``.item()``, ``.tolist()``) in forward or backward: ``fullgraph`` tracing raises on a break."""
    torch.manual_seed(4)
    x = torch.randn(4, 6, 5, 5) * 2 - 0.5
    up = torch.randn(4, 6, 5, 5)
    results = []
    for compiled in (False, True):
        torch.manual_seed(5)
        q = make()
        q.set_bits(3)
        q(x)  # initialise the step (its statistics are read on the host once, before any trace)
        fn = torch.compile(q, fullgraph=True, backend="aot_eager") if compiled else q
        v = x.clone().requires_grad_()
        out = fn(v)
        (out * up).sum().backward()
        results.append((out.detach(), v.grad, [p.grad for p in q.parameters()]))
    (eager_out, eager_v, eager_p), (out, v_grad, p_grads) = results
    torch.testing.assert_close(out, eager_out, rtol=0, atol=0)
    torch.testing.assert_close(v_grad, eager_v, rtol=0, atol=0)
    for a, b in zip(p_grads, eager_p, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
