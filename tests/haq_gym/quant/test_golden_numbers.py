"""The quantizer classes reproduce the numbers of the implementation they replaced.

``golden_quantizers.json`` holds :func:`fingerprint` of every family as computed at
commit 376a078 (one ``LSQQuantizer`` with two flags, duck-typed layer wrappers), before
the quantizer protocol, the family registry and the observers were introduced. The
fingerprint covers what a search and a finetune read off a quantized model: calibrated
eval logits, every layer's export grid, the state dict, a training step's gradients, a
bit-width change (LSQ rescales its step) and the search's re-initialisation of steps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from haq_gym.quant import apply_policy, calibrate, wrap_model
from haq_gym.quant.families import reinitialize_learned_steps, set_quantizer_family

GOLDEN = Path(__file__).with_name("golden_quantizers.json")
FAMILIES = ("linear", "lsq", "lsq+", "pot")
POLICY = [[8, 6], [3, 4], [4, 8]]
SECOND_POLICY = [[6, 8], [5, 2], [2, 3]]


def _net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU6(),
        nn.Conv2d(8, 8, 1),
        nn.Flatten(),
        nn.Linear(8 * 16, 4),
    )


def _grids(layers: list) -> list[list[float]]:
    out = []
    for layer in layers:
        g = layer.weight_quantizer.grid(layer.weight)
        row = [g.step, g.qmin, g.qmax, g.offset]
        if layer.a_bit != -1:
            a = layer.input_quantizer.grid()
            row += [a.step, a.qmin, a.qmax, a.offset]
        out.append(row)
    return out


def fingerprint(family: str) -> dict[str, Any]:
    """Numbers a ``family``-quantized tiny network produces (inputs go negative, so one input grid is signed)."""
    torch.manual_seed(0)
    net = _net()
    layers = [m for _, m in wrap_model(net)]
    set_quantizer_family(layers, family)
    apply_policy(layers, POLICY)
    x = torch.randn(8, 3, 4, 4)
    calibrate(net, layers, x)
    result: dict[str, Any] = {}
    net.eval()
    with torch.no_grad():
        result["eval"] = net(x).flatten().tolist()
    result["grids"] = _grids(layers)
    result["state_keys"] = list(net.state_dict())
    result["quantizer_state"] = {k: v.flatten().tolist() for k, v in net.state_dict().items() if "quantizer" in k}
    net.train()
    loss = net(x).square().mean()
    loss.backward()
    result["grads"] = {
        name: [float(p.grad.sum()), float(p.grad.abs().sum())]
        for name, p in net.named_parameters()
        if p.grad is not None
    }
    net.eval()
    apply_policy(layers, SECOND_POLICY)
    with torch.no_grad():
        result["rebits"] = net(x).flatten().tolist()
    result["rebits_grids"] = _grids(layers)
    reinitialize_learned_steps(layers)
    with torch.no_grad():
        result["reinit"] = net(x).flatten().tolist()
    return result


def _assert_close(actual: Any, expected: Any, where: str) -> None:
    if isinstance(expected, dict):
        assert sorted(actual) == sorted(expected), where
        for k in expected:
            _assert_close(actual[k], expected[k], f"{where}.{k}")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            _assert_close(a, e, f"{where}[{i}]")
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, rel=1e-5, abs=1e-6), where
    else:
        assert actual == expected, where


@pytest.mark.parametrize("family", FAMILIES)
def test_family_reproduces_the_numbers_of_the_replaced_implementation(family: str) -> None:
    golden = json.loads(GOLDEN.read_text())[family]
    _assert_close(fingerprint(family), golden, family)
