"""Latency, flash and BitOps of a policy, as ratios to a uniform reference precision."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from haq_gym.cost.latency_table import MAX_TABLE_BIT, policy_latency, unquantized_cost_bit, validate_table
from haq_gym.cost.layer_info import LayerInfo
from haq_gym.cost.model_size import bitops, flash_bits

Policy = Sequence[Sequence[int]]


@dataclass(frozen=True)
class Costs:
    """Absolute costs of a policy and their ratios to the reference policy."""

    latency: float
    flash_bits: int
    bitops: int
    latency_ratio: float
    flash_ratio: float
    bitops_ratio: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_float_bit(float_bit: object) -> int:
    """Raise unless ``float_bit`` is an integer bit width the ``[L, 8, 8]`` table can index (2..8).

    The reference policy is every layer at ``float_bit`` weights and activations, read at
    table column ``float_bit - 1``; 1 is excluded because weights need 2 bits.
    """
    if (
        isinstance(float_bit, bool)
        or not isinstance(float_bit, (int, np.integer))
        or not 2 <= float_bit <= MAX_TABLE_BIT
    ):
        raise ValueError(
            f"float_bit must be an integer in 2..{MAX_TABLE_BIT} (the latency table indexes 1..{MAX_TABLE_BIT} "
            f"bits; weights need at least 2), got {float_bit!r}"
        )
    return int(float_bit)


class CostModel:
    """Cost of ``[[w_bit, a_bit], ...]`` policies for one model and one latency table.

    The reference is HAQ's: every layer at ``float_bit`` weights and activations (8 in
    the seeds), so a ratio of 0.5 means half the latency (or flash) of the 8-bit model.
    A bit width of -1 (not quantized: the first layer's image input) is costed at
    ``float_bit``; ``unquantized_cost="haq"`` costs it as HAQ does, at the table's column
    -2 (7 bits). ``flash_reference_bit`` (default ``float_bit``) sets the weight precision
    the flash ratio is relative to: HAQ's k-means flow measures model size against the
    32-bit float model.
    """

    def __init__(
        self,
        layers: Sequence[LayerInfo],
        latency_table: np.ndarray,
        float_bit: int = 8,
        flash_reference_bit: int | None = None,
        unquantized_cost: str = "float_bit",
    ) -> None:
        check_float_bit(float_bit)
        if flash_reference_bit is not None and not 1 <= flash_reference_bit <= 32:
            raise ValueError(f"flash_reference_bit must be in 1..32, got {flash_reference_bit}")
        self.layers = list(layers)
        self.table = validate_table(latency_table, len(self.layers))
        self.float_bit = float_bit
        self.unquantized_cost = unquantized_cost
        self.unquantized_bit = unquantized_cost_bit(unquantized_cost, float_bit)
        self.flash_reference_bit = float_bit if flash_reference_bit is None else flash_reference_bit
        reference = [[float_bit, float_bit]] * len(self.layers)
        self.reference_latency = policy_latency(self.table, reference, float_bit)
        self.reference_flash = flash_bits(
            self.layers, [[self.flash_reference_bit, float_bit]] * len(self.layers), float_bit
        )
        self.reference_bitops = bitops(self.layers, reference, float_bit)
        if self.reference_latency <= 0:
            raise ValueError("latency table gives zero latency for the reference policy")

    def __len__(self) -> int:
        return len(self.layers)

    def latency(self, policy: Policy) -> float:
        return policy_latency(self.table, policy, self.unquantized_bit)

    def flash(self, policy: Policy) -> int:
        return flash_bits(self.layers, policy, self.float_bit)

    def layer_latency(self, index: int, w_bit: int, a_bit: int) -> float:
        w = self.unquantized_bit if w_bit == -1 else w_bit
        a = self.unquantized_bit if a_bit == -1 else a_bit
        return float(self.table[index, w - 1, a - 1])

    def layer_shares(self, policy: Policy, cost: str) -> list[float]:
        """Each layer's share of the policy's total ``latency`` or ``flash`` (fractions summing to 1).

        Explains a policy: a layer that holds a large share is where bits are expensive.
        """
        if len(policy) != len(self.layers):
            raise ValueError(f"policy has {len(policy)} entries; the model has {len(self.layers)} quantizable layers")
        if cost == "latency":
            parts = [self.layer_latency(i, w, a) for i, (w, a) in enumerate(policy)]
        elif cost in ("flash", "size"):
            parts = [
                float(flash_bits([layer], [bits], self.float_bit))
                for layer, bits in zip(self.layers, policy, strict=True)
            ]
        else:
            raise ValueError(f"cost must be 'latency', 'flash' or 'size', got {cost!r}")
        total = sum(parts)
        return [p / total for p in parts] if total > 0 else [0.0] * len(parts)

    def costs(self, policy: Policy) -> Costs:
        if len(policy) != len(self.layers):
            raise ValueError(f"policy has {len(policy)} entries; the model has {len(self.layers)} quantizable layers")
        lat = self.latency(policy)
        fl = self.flash(policy)
        bo = bitops(self.layers, policy, self.float_bit)
        return Costs(lat, fl, bo, lat / self.reference_latency, fl / self.reference_flash, bo / self.reference_bitops)
