"""A small MobileNetV2 with meaningful logits for integer-export tests, built in seconds.

The conftest's tiny model is random; its BatchNorm statistics at init leave activations
near zero and its logits nearly tied, which says nothing about agreement. Here its
BatchNorm statistics come from data and its classifier is a ridge least-squares fit on
the random features (no training loop, about 27% test top-1), so its logits are spread
like a classifier's rather than tied.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
import torch
from torch import nn

from haq_gym.data import load_dataset, materialize
from haq_gym.export.build import fold_batchnorm
from haq_gym.models import build_model
from haq_gym.quant import apply_policy, calibrate, wrap_model
from haq_gym.quant.families import set_quantizer_family

WIDTH = 0.35


@pytest.fixture(scope="session")
def digits() -> dict[str, torch.Tensor]:
    bundle = load_dataset("digits", None)
    train_x, train_y = materialize(bundle.search_train)
    test_x, test_y = materialize(bundle.test)
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y, "calib": train_x[:64]}


@pytest.fixture(scope="session")
def tiny_state(digits: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = build_model("mobilenetv2", num_classes=10, width_mult=WIDTH)
    images, labels = digits["train_x"], digits["train_y"]
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the pass below
    model.train()
    with torch.no_grad():
        model(images[:512])
        model.eval()
        feats = torch.flatten(nn.functional.adaptive_avg_pool2d(model.features(images), 1), 1).double()
        # Ridge fit on the raw features: dividing by per-feature spread would give near-constant
        # features huge weights, and the logits would hang on rounding noise.
        z = torch.cat([feats, torch.ones(len(feats), 1, dtype=torch.float64)], dim=1)
        target = nn.functional.one_hot(labels, 10).double()
        sol = torch.linalg.solve(z.T @ z + 10.0 * torch.eye(z.shape[1], dtype=torch.float64), z.T @ target)
        linear = model.classifier[1]
        linear.weight.copy_(sol[:-1].T.float())
        linear.bias.copy_(sol[-1].float())
    return {k: v.clone() for k, v in model.state_dict().items()}


QuantizedFactory = Callable[..., tuple[nn.Module, list]]


@pytest.fixture(scope="session")
def make_quantized(tiny_state: dict[str, torch.Tensor], digits: dict[str, torch.Tensor]) -> QuantizedFactory:
    """``make(policy, family="linear", fold_bn=False) -> (model, [(name, layer)])``, calibrated, in eval mode."""

    def make(policy: Sequence[Sequence[int]], family: str = "linear", fold_bn: bool = False):
        model = build_model("mobilenetv2", num_classes=10, width_mult=WIDTH)
        model.load_state_dict(tiny_state)
        model.eval()
        if fold_bn:
            fold_batchnorm(model)
        named = wrap_model(model)
        layers = [m for _, m in named]
        if family != "linear":
            set_quantizer_family(layers, family)
        apply_policy(layers, policy)
        calibrate(model, layers, digits["calib"])
        model.eval()
        return model, named

    return make
