"""ResNets for 32x32 inputs: He et al.'s CIFAR ResNet-20 and torchvision's ResNet-18 with a CIFAR stem.

ResNet-20 (He et al., CVPR 2016, section 4.2) is written here: a 3x3 stem with 16 channels,
three stages of three basic blocks (16, 32, 64 channels; the first block of stages 2
and 3 has stride 2), global average pooling and a linear classifier. Shortcuts are the
paper's option A: identity, and at the two stride-2 blocks a parameter-free shortcut
that subsamples by 2 and pads the new channels with zeros. So the net has exactly 20
weighted layers (19 convs + 1 linear), all quantizable, and 0.27 M parameters at 10
classes. ``width_mult`` scales the three widths.

ResNet-18 is torchvision's, with the usual CIFAR stem: the 7x7 stride-2 conv becomes a
3x3 stride-1 conv and the max-pool is removed, so the stages see 32, 16, 8 and 4 pixels.
Its 21 quantizable layers are the stem, 16 block convs, the three 1x1 downsample
shortcut convs and the classifier. It is built at width 1.0 only.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from haq_gym.compat import ensure_torchvision_importable


class CifarBasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an option-A (parameter-free) shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.stride = stride
        self.extra_channels = planes - in_planes

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1 and self.extra_channels == 0:
            return x
        x = x[:, :, :: self.stride, :: self.stride]
        front = self.extra_channels // 2
        return F.pad(x, (0, 0, 0, 0, front, self.extra_channels - front))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """He et al.'s CIFAR ResNet of depth ``6n + 2`` with option-A shortcuts."""

    def __init__(self, depth: int = 20, num_classes: int = 10, width_mult: float = 1.0) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2 with n >= 1, got {depth}")
        if width_mult <= 0:
            raise ValueError(f"width_mult must be positive, got {width_mult}")
        blocks = (depth - 2) // 6
        widths = [max(1, round(c * width_mult)) for c in (16, 32, 64)]
        self.conv1 = nn.Conv2d(3, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages = []
        in_planes = widths[0]
        for stage, planes in enumerate(widths):
            layers = []
            for b in range(blocks):
                layers.append(CifarBasicBlock(in_planes, planes, 2 if stage > 0 and b == 0 else 1))
                in_planes = planes
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        logits: torch.Tensor = self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
        return logits


def resnet20_cifar(num_classes: int = 10, width_mult: float = 1.0) -> nn.Module:
    """He et al.'s ResNet-20 for 32x32 inputs (option-A shortcuts, 20 quantizable layers)."""
    return CifarResNet(20, num_classes=num_classes, width_mult=width_mult)


def resnet18_cifar(num_classes: int = 10, width_mult: float = 1.0) -> nn.Module:
    """torchvision's ResNet-18 with a 3x3 stride-1 stem and no max-pool (input 32x32)."""
    if width_mult != 1.0:
        raise ValueError(f"resnet18 is torchvision's fixed-width network; width_mult must be 1.0, got {width_mult}")
    ensure_torchvision_importable()
    from torchvision.models import resnet18

    model: nn.Module = resnet18(num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model
