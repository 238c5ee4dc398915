"""Static description of each quantizable layer, measured with one forward pass.

These are the facts both the cost models and HAQ's observation need: shapes, strides,
weight counts, feature-map sizes and multiply-accumulates per image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class LayerInfo:
    """One quantizable layer (a Conv2d or Linear), for a single input image."""

    index: int
    name: str
    kind: str  # "conv", "depthwise" or "linear"
    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int
    groups: int
    weight_count: int
    in_h: int
    in_w: int
    out_h: int
    out_w: int
    macs: int

    @property
    def input_elements(self) -> int:
        """Activation values the layer reads per image."""
        return self.in_channels * self.in_h * self.in_w

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_layers(model: nn.Module, layers: Sequence[tuple[str, nn.Module]], image_size: int) -> list[LayerInfo]:
    """Forward one zero image through ``model`` and describe each of ``layers``.

    ``layers`` are ``(qualified name, module)`` pairs of Conv2d/Linear modules (or their
    quantized wrappers), in the order the env will visit them.
    """
    shapes: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    handles = []
    for i, (_, module) in enumerate(layers):
        handles.append(
            module.register_forward_hook(
                lambda m, inp, out, i=i: shapes.__setitem__(i, (tuple(inp[0].shape), tuple(out.shape)))
            )
        )
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters())
        with torch.inference_mode():
            model(torch.zeros(1, 3, image_size, image_size, device=param.device, dtype=param.dtype))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    infos = []
    for i, (name, module) in enumerate(layers):
        if i not in shapes:
            raise ValueError(f"layer {name!r} was not called in a forward pass; cannot measure it")
        in_shape, out_shape = shapes[i]
        if isinstance(module, nn.Conv2d):
            depthwise = module.groups == module.in_channels and module.groups > 1
            k = module.kernel_size[0]
            out_h, out_w = out_shape[2], out_shape[3]
            macs = module.weight.numel() * out_h * out_w
            infos.append(
                LayerInfo(
                    i,
                    name,
                    "depthwise" if depthwise else "conv",
                    module.in_channels,
                    module.out_channels,
                    k,
                    module.stride[0],
                    module.groups,
                    module.weight.numel(),
                    in_shape[2],
                    in_shape[3],
                    out_h,
                    out_w,
                    macs,
                )
            )
        elif isinstance(module, nn.Linear):
            infos.append(
                LayerInfo(
                    i,
                    name,
                    "linear",
                    module.in_features,
                    module.out_features,
                    1,
                    0,
                    1,
                    module.weight.numel(),
                    1,
                    1,
                    1,
                    1,
                    module.weight.numel(),
                )
            )
        else:
            raise TypeError(f"layer {name!r} is a {type(module).__name__}; expected Conv2d or Linear")
    return infos
