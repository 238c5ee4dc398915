"""The quantizer contract: every registered family and every quantizer class honours it; the registry's errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from haq_gym.quant import apply_policy, calibrate, wrap_model
from haq_gym.quant.families import (
    QuantizerFamily,
    family_names,
    get_family,
    quantizer_family,
    register_family,
    set_quantizer_family,
)
from haq_gym.quant.grid import QuantGrid
from haq_gym.quant.kmeans_quantizer import KMeansWeightQuantizer
from haq_gym.quant.linear_quantizers import LinearActivationQuantizer, LinearWeightQuantizer
from haq_gym.quant.log_quantizer import LogWeightQuantizer
from haq_gym.quant.observers import MeanAbsObserver, RandomSampleObserver, StridedSampleObserver
from haq_gym.quant.protocol import Quantizer


def _calibrated_pair(family: str) -> tuple[Quantizer, Quantizer, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    wq, aq = get_family(family).build(seed=3)
    weight, x = torch.randn(8, 4), torch.rand(16, 4) * 6
    aq.observing = True
    assert aq(x) is x  # observing: the input passes through
    aq.observing = False
    wq.set_bits(4)
    aq.set_bits(4)
    return wq, aq, weight, x


@pytest.mark.parametrize("family", family_names())
def test_every_registered_family_builds_conforming_quantizers(family: str) -> None:
    wq, aq = get_family(family).build(seed=3)
    assert isinstance(wq, Quantizer) and isinstance(aq, Quantizer)
    assert (wq.role, aq.role) == ("weight", "activation")
    assert wq.family == aq.family == family
    assert wq.bits is None and aq.bits is None
    t = torch.randn(5, 3)
    assert wq(t) is t and aq(t) is t  # no bit width: pass-through


@pytest.mark.parametrize("family", family_names(grid=True))
def test_every_grid_family_quantizes_onto_the_grid_it_reports(family: str) -> None:
    wq, aq, weight, x = _calibrated_pair(family)
    wq.eval()
    aq.eval()
    for q, tensor in ((wq, weight), (aq, x)):
        g = q.grid(tensor)
        assert isinstance(g, QuantGrid) and g.qmax - g.qmin + 1 <= 2**4
        codes = (q(tensor) - g.offset) / g.step
        torch.testing.assert_close(codes, codes.round(), atol=1e-4, rtol=0)
        assert codes.min() >= g.qmin - 1e-4 and codes.max() <= g.qmax + 1e-4
    wq.set_bits(None)
    assert wq(weight) is weight


@pytest.mark.parametrize("family", family_names())
def test_every_family_forgets_its_calibration(family: str) -> None:
    _, aq, _, x = _calibrated_pair(family)
    aq.eval()
    before = aq(x)
    aq.reset_calibration()
    aq.observing = True
    aq(x * 0.5)
    aq.observing = False
    aq.set_bits(4)
    aq.reinitialize()
    assert not torch.equal(aq(x), before)  # the range now comes from the halved batch


@pytest.mark.parametrize("family", family_names())
def test_observers_add_nothing_to_the_state_dict(family: str) -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Flatten(), nn.Linear(4 * 9, 2))
    layers = [m for _, m in wrap_model(net)]
    set_quantizer_family(layers, family)
    apply_policy(layers, [[8, 8], [4, 4]])
    calibrate(net, layers, torch.randn(4, 3, 3, 3))
    extra = sorted({k.split(".")[-1] for k in net.state_dict() if "quantizer" in k})
    learned = {
        "linear": [],
        "kmeans": [],
        "haq": ["activation_range", "range_bits", "signed_input", "weight_range"],
        "lsq": ["initialized", "signed", "step"],
        "lsq+": ["initialized", "offset", "signed", "step"],
        "pot": ["initialized", "log2_step", "signed"],
    }
    assert extra == learned[family]


@pytest.mark.parametrize("cls, bits", [(LinearWeightQuantizer, 4), (KMeansWeightQuantizer, 4), (LogWeightQuantizer, 8)])
def test_weight_only_quantizers_follow_the_protocol(cls: type[Quantizer], bits: int) -> None:
    q = cls()
    assert isinstance(q, Quantizer) and q.role == "weight" and q.family is None
    q.set_bits(bits)
    w = torch.randn(16, 8)
    q.eval()
    out = q(w)
    assert out.shape == w.shape and not torch.equal(out, w)
    q.reset_calibration()
    torch.testing.assert_close(q(w), out)
    if cls is not LinearWeightQuantizer:
        with pytest.raises(TypeError, match="no uniform grid"):
            q.grid(w)


class _Halving(Quantizer):
    """The smallest complete quantizer: halves its input."""

    def set_bits(self, bits: int | None) -> None:
        self.bits = bits

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        return x / 2

    def reset_calibration(self) -> None:
        pass

    def grid(self, tensor: torch.Tensor | None = None) -> QuantGrid:
        raise TypeError("no uniform grid")


def test_the_contract_is_enforced_when_a_quantizer_is_made() -> None:
    class Incomplete(Quantizer):
        def set_bits(self, bits: int | None) -> None:
            self.bits = bits

    with pytest.raises(TypeError, match="abstract"):
        Incomplete("weight")
    with pytest.raises(ValueError, match="role must be 'weight' or 'activation', got 'bias'"):
        _Halving("bias")
    q = _Halving("activation")
    x = torch.ones(3)
    q.observing = True
    assert q(x) is x
    q.observing = False
    assert q(x) is x  # no bits yet
    q.set_bits(4)
    assert q(x).tolist() == [0.5, 0.5, 0.5]


def test_unknown_family_error_lists_the_known_names() -> None:
    with pytest.raises(
        ValueError, match=r"unknown quantizer family 'lsq2'; expected one of linear, haq, lsq, lsq\+, pot, kmeans"
    ):
        get_family("lsq2")
    layers = [m for _, m in wrap_model(nn.Sequential(nn.Linear(2, 2)))]
    with pytest.raises(ValueError, match="unknown quantizer family"):
        set_quantizer_family(layers, "nope")
    assert family_names(learned=True) == ("haq", "lsq", "lsq+", "pot", "kmeans")
    assert family_names(learned=False) == ("linear",) and family_names(grid=False) == ("kmeans",)


def test_a_name_registers_once_and_a_family_must_build_quantizers() -> None:
    with pytest.raises(ValueError, match="'lsq' is already registered"):
        register_family(QuantizerFamily("lsq", LinearWeightQuantizer, LinearActivationQuantizer, False, "dup"))
    broken = QuantizerFamily("broken", lambda: nn.Identity(), LinearActivationQuantizer, False, "not quantizers")
    with pytest.raises(TypeError, match="family 'broken' built a Identity, which is not a Quantizer"):
        broken.build()


def test_quantizer_family_names_hand_made_quantizers_by_class() -> None:
    layers = [m for _, m in wrap_model(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)))]
    assert quantizer_family(layers) == "linear"
    layers[0].set_quantizers(LogWeightQuantizer(), layers[0].input_quantizer)
    with pytest.raises(ValueError, match=r"mix quantizer families: \['LogWeightQuantizer', 'linear'\]"):
        quantizer_family(layers)


def test_layers_fold_the_input_step_only_for_quantizers_that_offer_it() -> None:
    torch.manual_seed(0)
    layer = wrap_model(nn.Sequential(nn.Linear(6, 3)))[0][1]
    x = torch.rand(4, 6)
    calibrate(layer, [layer], x)
    layer.set_bits(8, 4)
    layer.eval()
    codes, _ = layer._operands(x)
    assert torch.equal(codes, codes.round())  # linear pair: integer codes, step folded into the weight
    layer.set_quantizers(LogWeightQuantizer(), layer.input_quantizer)
    inputs, _ = layer._operands(x)
    torch.testing.assert_close(inputs, layer.input_quantizer(x))  # log8 weights: plain fake quantization


def test_observers_record_what_their_quantizers_read() -> None:
    x = torch.arange(-3.0, 5.0)
    random = RandomSampleObserver(seed=1, size=4)
    assert not random.observed
    random.observe(x)
    random.observe(x)
    assert random.sample.numel() == 2 * (4 + 2) and random.minimum == -3.0
    assert random.clip(-7, 7) == pytest.approx(4.0, abs=0.5)
    random.reset()
    with pytest.raises(RuntimeError, match="calibrate"):
        random.clip(-7, 7)
    strided = StridedSampleObserver(size=4)
    strided.observe(torch.tensor([1.0, -9.0, 2.0, 3.0, 4.0, 5.0]))
    assert strided.sample.tolist() == [1.0, 2.0, 4.0, 9.0]  # every 2nd value and the largest magnitude
    mean_abs = MeanAbsObserver()
    mean_abs.observe(x)
    assert (mean_abs.minimum, mean_abs.mean_abs) == (-3.0, pytest.approx(2.0))
