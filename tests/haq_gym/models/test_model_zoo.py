"""The registered models: layer counts, shapes at 32x32, parameters, recipes, and the layer facts the envs use."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from haq_gym.cost import measure_layers
from haq_gym.models import build_model, model_names
from haq_gym.models.pretrain import FloatRecipe
from haq_gym.models.registry import default_recipe
from haq_gym.quant import calibrate, wrap_model

# name -> (quantizable layers, parameters at width 1.0 and 10 classes, spatial sizes seen by the convs)
EXPECTED = {
    "mobilenetv2": (53, 2_236_682, {32, 16, 8, 4}),
    "mobilenetv3small": (54, 1_528_106, {32, 16, 8, 4, 1}),
    "resnet20": (20, 269_722, {32, 16, 8}),
    "resnet18": (21, 11_173_962, {32, 16, 8, 4}),
}


def test_registry_names_and_errors() -> None:
    assert set(model_names()) == set(EXPECTED)
    with pytest.raises(ValueError, match="resnet18, resnet20"):
        build_model("vgg16", 10)
    with pytest.raises(ValueError, match=r"width_mult must be 1\.0"):
        build_model("resnet18", 10, width_mult=0.5)
    from haq_gym.models.resnet import CifarResNet

    with pytest.raises(ValueError, match="6n \\+ 2"):
        CifarResNet(depth=21)
    assert default_recipe("mobilenetv2") == FloatRecipe()  # unchanged: existing cached checkpoints stay valid
    assert default_recipe("resnet18").epochs < FloatRecipe().epochs
    # per dataset: the Fashion-MNIST recipe applies to every model, and beats a model's digits recipe
    assert default_recipe("mobilenetv2", "fashion-mnist").batch_size == 128
    assert default_recipe("resnet18", "fashion-mnist") == default_recipe("resnet20", "fashion-mnist")
    assert default_recipe("resnet18", "cifar10") == FloatRecipe()
    with pytest.raises(ValueError, match="unknown model"):
        default_recipe("nope")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_layers_params_and_feature_maps(name: str) -> None:
    n_layers, n_params, sizes = EXPECTED[name]
    model = build_model(name, 10)
    assert sum(p.numel() for p in model.parameters()) == n_params
    named = wrap_model(model)
    assert len(named) == n_layers
    infos = measure_layers(model, named, 32)
    assert {i.in_h for i in infos if i.kind != "linear"} == sizes
    assert infos[0].in_h == 32 and infos[0].stride == 1  # CIFAR stem: full resolution
    assert infos[-1].kind == "linear" and infos[-1].out_channels == 10
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_mobilenetv3_layers_strides_and_squeeze_excitation() -> None:
    model = build_model("mobilenetv3small", 10)
    assert model.features[0][0].stride == (1, 1) and model.features[1].block[0][0].stride == (1, 1)
    assert all(m.momentum == 0.1 for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    infos = measure_layers(model, wrap_model(model), 32)
    se = [i for i in infos if ".fc" in i.name]
    assert len(se) == 18 and all(i.in_h == 1 and i.kind == "conv" and i.macs == i.weight_count for i in se)
    assert sum(i.kind == "depthwise" for i in infos) == 11
    assert sum(i.weight_count for i in se) / sum(i.weight_count for i in infos) == pytest.approx(0.303, abs=0.01)


def test_hardswish_inputs_are_quantized_signed_and_relu_inputs_unsigned() -> None:
    torch.manual_seed(0)
    model = build_model("mobilenetv3small", 10, width_mult=0.5).eval()
    named = dict(wrap_model(model))
    calibrate(model, list(named.values()), torch.randn(8, 3, 32, 32))
    signed = {name: layer.input_quantizer.signed for name, layer in named.items()}
    assert signed["features.1.block.0.0"]  # reads the stem's hard-swish output
    assert signed["features.4.block.1.0"]  # depthwise after a hard-swish expansion
    assert signed["features.4.block.3.0"]  # projection of a hard-swish block (SE-scaled, signed)
    assert not signed["features.2.block.1.0"]  # depthwise after a ReLU expansion
    assert not signed["features.4.block.2.fc2"]  # SE's second conv reads a ReLU
    assert signed["classifier.3"]  # the classifier's hard-swish hidden layer
    layer = named["features.4.block.1.0"]
    layer.set_bits(4, 2)  # 2-bit signed grid {-1, 0, 1} * step
    x = torch.randn(2, layer.in_channels, 8, 8)
    assert layer.input_quantizer(x).unique().numel() <= 3


@pytest.mark.parametrize("width, channels", [(1.0, (16, 32, 64)), (0.5, (8, 16, 32))])
def test_resnet20_option_a_shortcut(width: float, channels: tuple[int, int, int]) -> None:
    model = build_model("resnet20", 10, width_mult=width)
    assert [model.conv1.out_channels, model.layer2[0].conv1.out_channels, model.layer3[0].conv1.out_channels] == list(
        channels
    )
    block = model.layer2[0]
    x = torch.randn(1, channels[0], 8, 8)
    short = block.shortcut(x)
    assert short.shape == (1, channels[1], 4, 4)
    front = (channels[1] - channels[0]) // 2
    assert torch.equal(short[:, front : front + channels[0]], x[:, :, ::2, ::2])
    assert short[:, :front].abs().sum() == 0 and short[:, front + channels[0] :].abs().sum() == 0
