"""One W8A8 conv: the integer export against PyTorch's own quantized engine (``torch.ao``).

Both sides get the same codes, scales and zero points (0). Any difference must be a
rounding tie: torch.ao rescales in float32 (``nearbyint(acc * s_x * s_w / s_y +
bias / s_y)``), the export rounds the exact value (int32 bias with ``2**-k`` precision,
31-bit dyadic multiplier) half to even.

On x86 (fbgemm) the activations use 7 of their 8 bits, as torch.ao's own observers
do there (``reduce_range``): fbgemm multiplies uint8 by int8 with ``vpmaddubsw``, whose
int16 pair sums saturate for full-range inputs (measured here: about a third of the
outputs off by up to 34 codes), a limit of that kernel rather than a rounding rule.
QNNPACK takes the full 8 bits.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from haq_gym.export.build import fold_conv
from haq_gym.export.integer_model import conv2d_int
from haq_gym.quant.grid import QuantGrid

CASES = [
    (e, top)
    for e, top in (("x86", 127), ("fbgemm", 127), ("qnnpack", 255))
    if e in torch.backends.quantized.supported_engines
]
TIE = 1e-3
"""torch.ao's float32 rescale can move a value this close to a half across it."""


@pytest.mark.parametrize("engine,act_top", CASES)
def test_w8a8_conv_matches_torch_ao_except_at_ties(engine: str, act_top: int) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 24, 3, padding=1, bias=True).eval()
    weight, bias = conv.weight.detach(), conv.bias.detach()
    x = torch.rand(8, 16, 12, 12) * 4.0  # non-negative: quint8, zero point 0
    s_x = 4.0 / act_top
    s_w = float(weight.abs().max()) / 127
    with torch.no_grad():
        s_y = float(conv(x).clamp(min=0).max()) / 255
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        qx = torch.quantize_per_tensor(x, s_x, 0, torch.quint8)
        qw = torch.quantize_per_tensor(weight, s_w, 0, torch.qint8)
        qconv = torch.ao.nn.quantized.Conv2d(16, 24, 3, padding=1)
        qconv.set_weight_bias(qw, bias)
        qconv.scale, qconv.zero_point = s_y, 0
        theirs = qconv(qx).int_repr().to(torch.int64)
    finally:
        torch.backends.quantized.engine = previous

    x_codes, w_codes = qx.int_repr().to(torch.int32), qw.int_repr().to(torch.int32)
    assert int(x_codes.max()) <= act_top
    folded = fold_conv(w_codes, s_w, QuantGrid(s_x, 0, 255), QuantGrid(s_y, 0, 255), conv_bias=bias)
    acc = conv2d_int(x_codes, w_codes, 1, 1, 1)
    ours = folded.requant.apply(acc.bitwise_left_shift(folded.bias_shift) + folded.bias.view(1, -1, 1, 1), 1)
    ours = ours.to(torch.int64)

    exact = (acc.double() * (s_w * s_x) + bias.double().view(1, -1, 1, 1)) / s_y
    tie_distance = ((exact - exact.floor()) - 0.5).abs()
    differ = ours != theirs
    assert float(differ.double().mean()) < 1e-3
    if bool(differ.any()):
        assert int((ours - theirs).abs().max()) == 1
        assert float(tie_distance[differ].max()) < TIE  # every difference is a rounding tie
    clear = tie_distance >= TIE  # elsewhere both give the exact rounding
    want = torch.round(exact).clamp(0, 255).to(torch.int64)
    assert torch.equal(ours[clear], want[clear]) and torch.equal(theirs[clear], want[clear])
