"""Turn a float model into a mixed-precision one and drive its bit widths."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from haq_gym.quant.qlayers import QuantConv2d, QuantLayerMixin, QuantLinear


def wrap_model(model: nn.Module) -> list[tuple[str, QuantLayerMixin]]:
    """Replace every Conv2d and Linear, in place, by its quantized wrapper.

    Returns the quantizable layers in module order (HAQ's order: for MobileNetV2 the stem
    conv, each block's convs, the last 1x1 conv and the classifier: 53 layers). Calling
    it on an already wrapped model returns the existing wrappers.
    """
    for seed, parent in enumerate(list(model.modules())):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, QuantLayerMixin):
                continue
            if isinstance(child, nn.Conv2d):
                setattr(parent, child_name, QuantConv2d.from_float(child, seed=seed))
            elif isinstance(child, nn.Linear):
                setattr(parent, child_name, QuantLinear.from_float(child, seed=seed))
    return quant_layers(model)


def quant_layers(model: nn.Module) -> list[tuple[str, QuantLayerMixin]]:
    """The quantized wrappers of ``model`` with their qualified names, in module order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, QuantLayerMixin)]


def apply_policy(layers: Sequence[QuantLayerMixin], policy: Sequence[Sequence[int]]) -> None:
    """Set ``[w_bit, a_bit]`` per layer; raises if the policy does not fit the layers."""
    if len(policy) != len(layers):
        raise ValueError(f"policy has {len(policy)} entries but the model has {len(layers)} quantizable layers")
    for i, (layer, bits) in enumerate(zip(layers, policy, strict=True)):
        if len(bits) != 2:
            raise ValueError(f"policy entry {i} should be [w_bit, a_bit], got {list(bits)!r}")
        layer.set_bits(int(bits[0]), int(bits[1]))


@contextmanager
def observing(layers: Sequence[QuantLayerMixin]) -> Iterator[None]:
    """Quantization off and activation observers on, for a calibration forward pass."""
    saved = [(layer.w_bit, layer.a_bit) for layer in layers]
    for layer in layers:
        layer.set_bits(-1, -1)
        layer.weight_quantizer.reset_calibration()
        layer.input_quantizer.reset_calibration()
        layer.input_quantizer.observing = True
    try:
        yield
    finally:
        for layer, (w, a) in zip(layers, saved, strict=True):
            layer.input_quantizer.observing = False
            layer.set_bits(w, a)


def calibrate(model: nn.Module, layers: Sequence[QuantLayerMixin], images: torch.Tensor) -> None:
    """Record every layer's float input statistics on one batch (HAQ calibrates on one batch too).

    As in HAQ, the statistics come from the float model (quantization off during the
    pass), so they do not depend on the policy and one calibration serves every episode.
    """
    was_training = model.training
    model.eval()
    with observing(layers), torch.inference_mode():
        model(images)
    model.train(was_training)
