"""Quantization core: the quantizer protocol, fake-quant arithmetic, observers, quantizers, layer wrappers, helpers."""

from haq_gym.quant.families import QuantizerFamily, family_names, get_family, register_family, set_quantizer_family
from haq_gym.quant.linear_quantizers import LinearActivationQuantizer, LinearWeightQuantizer
from haq_gym.quant.model_wrapping import apply_policy, calibrate, quant_layers, wrap_model
from haq_gym.quant.protocol import Quantizer
from haq_gym.quant.qlayers import QuantConv2d, QuantLayerMixin, QuantLinear

__all__ = [
    "LinearActivationQuantizer",
    "LinearWeightQuantizer",
    "QuantConv2d",
    "QuantLayerMixin",
    "QuantLinear",
    "Quantizer",
    "QuantizerFamily",
    "apply_policy",
    "calibrate",
    "family_names",
    "get_family",
    "quant_layers",
    "register_family",
    "set_quantizer_family",
    "wrap_model",
]
