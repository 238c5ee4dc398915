"""Quantization core: fake-quant arithmetic, quantizers, layer wrappers and model helpers."""

from haq_gym.quant.linear_quantizers import LinearActivationQuantizer, LinearWeightQuantizer
from haq_gym.quant.model_wrapping import apply_policy, calibrate, quant_layers, wrap_model
from haq_gym.quant.qlayers import QuantConv2d, QuantLayerMixin, QuantLinear

__all__ = [
    "LinearActivationQuantizer",
    "LinearWeightQuantizer",
    "QuantConv2d",
    "QuantLayerMixin",
    "QuantLinear",
    "apply_policy",
    "calibrate",
    "quant_layers",
    "wrap_model",
]
