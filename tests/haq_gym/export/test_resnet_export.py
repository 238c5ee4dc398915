"""Integer export of ResNets: option-A shortcuts (ResNet-20), 1x1 projections (torchvision ResNet), refusals."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from haq_gym.export.build import ExportError, export_integer_model
from haq_gym.export.compare import compare_models
from haq_gym.export.integer_model import ReluOp, ShortcutOp
from haq_gym.export.packed_file import load_integer_model, write_packed_file
from haq_gym.models import build_model
from haq_gym.quant import apply_policy, calibrate, wrap_model


def _with_data_statistics(model: nn.Module, images: torch.Tensor) -> nn.Module:
    """BatchNorm statistics from data and non-trivial affine terms, so activations are spread (no training)."""
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
    model.train()
    with torch.no_grad():
        model(images)
    return model.eval()


def _quantize(model: nn.Module, images: torch.Tensor, policy_of) -> list:
    named = wrap_model(model)
    layers = [m for _, m in named]
    apply_policy(layers, policy_of(len(layers)))
    calibrate(model, layers, images)
    model.eval()
    return named


def _mixed(n: int, seed: int = 0) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    return [[8, -1]] + torch.randint(2, 9, (n - 2, 2), generator=gen).tolist() + [[8, 8]]


@pytest.mark.parametrize("policy", ["w4a4", "mixed"])
def test_resnet20_matches_the_fake_quant_model(policy, digits, tmp_path) -> None:
    torch.manual_seed(0)
    model = _with_data_statistics(build_model("resnet20", 10, width_mult=0.5), digits["train_x"][:128])
    named = _quantize(
        model, digits["calib"], (lambda n: [[8, -1]] + [[4, 4]] * (n - 2) + [[8, 8]]) if policy == "w4a4" else _mixed
    )
    im = export_integer_model(model, named, digits["calib"])
    assert sum(isinstance(op, ShortcutOp) for op in im.ops) == 2  # the two stride-2 option-A blocks
    assert sum(isinstance(op, ReluOp) for op in im.ops) == 9  # one after every block's add
    report = compare_models(model, named, im, digits["test_x"][:16], digits["test_y"][:16])
    assert len(report.layers) == 20
    assert report.unexplained_mismatches == []
    assert report.forced_code_agreement >= 0.9999
    assert report.prediction_agreement == 1.0 and report.max_logit_diff < 1e-3
    write_packed_file(tmp_path / "r20.hqpk", im)
    again = load_integer_model(tmp_path / "r20.hqpk")
    assert torch.equal(again.predict(digits["test_x"][:8])[0], im.predict(digits["test_x"][:8])[0])


def test_torchvision_resnet_with_projection_shortcuts(digits) -> None:
    """A one-block-per-stage torchvision ResNet (ResNet-18's blocks, stem and 1x1 downsample convs) on 16x16 images."""
    from haq_gym.compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    from torchvision.models.resnet import BasicBlock, ResNet

    torch.manual_seed(0)
    model = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10)
    model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    model.maxpool = nn.Identity()
    small = F.interpolate(digits["train_x"][:96], size=16, mode="bilinear", align_corners=False)
    test = F.interpolate(digits["test_x"][:6], size=16, mode="bilinear", align_corners=False)
    model = _with_data_statistics(model, small)
    named = _quantize(model, small[:32], lambda n: [[8, -1]] + [[5, 6]] * (n - 2) + [[8, 8]])
    assert len(named) == 13  # stem, 8 block convs, 3 downsample, fc
    im = export_integer_model(model, named, small[:32])
    report = compare_models(model, named, im, test, digits["test_y"][:6])
    assert report.unexplained_mismatches == []
    assert report.forced_code_agreement >= 0.9999 and report.prediction_agreement == 1.0


def test_unsupported_architecture_is_refused_with_the_supported_list(digits) -> None:
    from haq_gym.compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    from torchvision.models.resnet import Bottleneck, ResNet

    model = ResNet(Bottleneck, [1, 1, 1, 1], num_classes=10).eval()  # bottleneck blocks: not handled
    named = wrap_model(model)
    with pytest.raises(
        ExportError, match=r"does not support ResNet; supported: mobilenetv2.*mobilenetv3small.*resnet20.*resnet18"
    ):
        export_integer_model(model, named, digits["calib"])
