"""Flash (packed weight storage) and BitOps of a mixed-precision policy."""

from __future__ import annotations

from collections.abc import Sequence

from haq_gym.cost.layer_info import LayerInfo


def flash_bits(layers: Sequence[LayerInfo], policy: Sequence[Sequence[int]], unquantized_bit: int) -> int:
    """Bits that the packed weights take: ``sum_i weight_count_i * w_bit_i`` (biases excluded, as in HAQ)."""
    return int(
        sum(
            layer.weight_count * (unquantized_bit if w == -1 else w)
            for layer, (w, _) in zip(layers, policy, strict=True)
        )
    )


def bitops(layers: Sequence[LayerInfo], policy: Sequence[Sequence[int]], unquantized_bit: int) -> int:
    """Bit operations per image: ``sum_i macs_i * w_bit_i * a_bit_i``."""
    total = 0
    for layer, (w, a) in zip(layers, policy, strict=True):
        total += layer.macs * (unquantized_bit if w == -1 else w) * (unquantized_bit if a == -1 else a)
    return int(total)
