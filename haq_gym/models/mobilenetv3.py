"""MobileNetV3-Small for 32x32 inputs, built from torchvision's definition.

torchvision's ImageNet MobileNetV3-Small reduces a 32x32 image to 1x1. As for our
MobileNetV2, two strides change from 2 to 1: the stem convolution (``features[0][0]``) and
the depthwise convolution of the first bottleneck (``features[1].block[0][0]``), so the
feature maps go 32 -> 32 -> 16 -> 8 -> 4 (the later stride-2 blocks 2, 4 and 9 are kept).

BatchNorm momentum is PyTorch's default 0.1 instead of torchvision's 0.01: the 0.01
(TensorFlow's 0.99 decay, meant for long ImageNet runs) leaves the running statistics of a
few-hundred-step training dominated by their initial values.

Every Conv2d and Linear is quantizable, 54 layers at any width: the stem, the depthwise
and 1x1 convs of the 11 bottlenecks, the two 1x1 convs of each of the 9 squeeze-excitation
blocks, the last 1x1 conv and both classifier layers. The squeeze-excitation convs hold
about 30% of the weights (but almost no multiply-accumulates), so a model-size budget
cannot ignore them; they are searched like every other layer. Hard-swish outputs are
signed (down to -0.375); the activation quantizers detect that at calibration and use a
signed grid for the layers that read them.
"""

from __future__ import annotations

from functools import partial
from typing import cast

from torch import nn

from haq_gym.compat import ensure_torchvision_importable

BATCHNORM_MOMENTUM = 0.1


def mobilenet_v3_small_cifar(num_classes: int = 10, width_mult: float = 1.0) -> nn.Module:
    """Return torchvision's MobileNetV3-Small with CIFAR strides (input 32x32)."""
    ensure_torchvision_importable()
    from torchvision.models import mobilenet_v3_small

    norm = partial(nn.BatchNorm2d, eps=0.001, momentum=BATCHNORM_MOMENTUM)
    model = mobilenet_v3_small(num_classes=num_classes, width_mult=width_mult, norm_layer=norm)
    model.features[0][0].stride = (1, 1)
    model.features[1].block[0][0].stride = (1, 1)
    return cast(nn.Module, model)  # torchvision is untyped
