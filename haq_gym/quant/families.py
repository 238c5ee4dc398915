"""Quantizer families by name: which quantizers a model's wrapped layers use.

``linear`` is HAQ's (MSE-clipped, calibrated ranges, nothing learned); ``lsq``, ``lsq+``
and ``pot`` are the learned-step family of :mod:`haq_gym.quant.lsq`. The search env and
the finetune command both pick a family by these names, so a search can evaluate
policies with the very quantizer the finetune will train (HAQ-LSQ).
"""

from __future__ import annotations

from collections.abc import Sequence

from haq_gym.quant.linear_quantizers import LinearActivationQuantizer, LinearWeightQuantizer
from haq_gym.quant.lsq import LSQQuantizer
from haq_gym.quant.qlayers import QuantLayerMixin

QUANTIZER_FAMILIES = ("linear", "lsq", "lsq+", "pot")


def check_family(name: str) -> str:
    if name not in QUANTIZER_FAMILIES:
        raise ValueError(f"unknown quantizer family {name!r}; expected one of {', '.join(QUANTIZER_FAMILIES)}")
    return name


def set_quantizer_family(layers: Sequence[QuantLayerMixin], family: str) -> None:
    """Give every layer fresh quantizers of ``family``, keeping its bit widths (calibrate afterwards)."""
    check_family(family)
    for seed, layer in enumerate(layers):
        if family == "linear":
            layer.set_quantizers(LinearWeightQuantizer(), LinearActivationQuantizer(seed=seed))
        else:
            pot = family == "pot"
            layer.set_quantizers(LSQQuantizer("weight", power_of_two=pot),
                                 LSQQuantizer("activation", power_of_two=pot, learn_offset=family == "lsq+"))


def reinitialize_learned_steps(layers: Sequence[QuantLayerMixin]) -> None:
    """Put every learned step back to its initial value for the current bits (a no-op for ``linear``).

    The search calls this after applying each policy, so every policy is judged from the
    same starting point rather than from steps left over by the previous one.
    """
    for layer in layers:
        for q in (layer.weight_quantizer, layer.input_quantizer):
            if isinstance(q, LSQQuantizer):
                q.reinitialize()


def quantizer_family(layers: Sequence[QuantLayerMixin]) -> str:
    """Name of the family the layers use (raises if they mix families)."""
    names = set()
    for layer in layers:
        q = layer.weight_quantizer
        if isinstance(q, LSQQuantizer):
            names.add("pot" if q.power_of_two else "lsq+" if layer.input_quantizer.learn_offset else "lsq")
        elif isinstance(q, LinearWeightQuantizer):
            names.add("linear")
        else:
            names.add(type(q).__name__)
    if len(names) != 1:
        raise ValueError(f"layers mix quantizer families: {sorted(names)}")
    return names.pop()
