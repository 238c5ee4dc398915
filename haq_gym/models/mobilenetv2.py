"""MobileNetV2 for 32x32 inputs, built from torchvision's definition.

torchvision's ImageNet MobileNetV2 reduces a 32x32 image to 1x1. As in the common CIFAR
variants, we set the stem convolution and the first stride-2 depthwise convolution (the
first block of the 24-channel stage) to stride 1, so the feature maps go 32 -> 32 -> 16
-> 8 -> 4. The module structure (and so the 53 quantizable layers of HAQ's tables) is
unchanged.
"""

from __future__ import annotations

from typing import cast

from torch import nn

from haq_gym.compat import ensure_torchvision_importable


def mobilenet_v2_cifar(num_classes: int = 10, width_mult: float = 1.0) -> nn.Module:
    """Return torchvision's MobileNetV2 with CIFAR strides (input 32x32)."""
    ensure_torchvision_importable()
    from torchvision.models import mobilenet_v2

    model = mobilenet_v2(num_classes=num_classes, width_mult=width_mult)
    model.features[0][0].stride = (1, 1)
    model.features[2].conv[1][0].stride = (1, 1)
    return cast(nn.Module, model)  # torchvision is untyped
