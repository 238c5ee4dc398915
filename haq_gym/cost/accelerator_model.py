"""An analytic bit-serial accelerator that generates latency tables for any model.

HAQ's tables came from an unreleased simulator of a bit-serial accelerator (BISMO). The
one table it shipped behaves like a roofline per layer [see docs/cost_models.md]: the
latency is the larger of a compute term, proportional to multiply-accumulates times
``w_bit * a_bit`` (bit-serial arithmetic), and a memory term, proportional to the bits
moved (weights at ``w_bit``, input activations at ``a_bit``). This module computes exactly
that, with the machine's parameters in a config, so every model gets a table.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import yaml

from haq_gym.cost.latency_table import MAX_TABLE_BIT
from haq_gym.cost.layer_info import LayerInfo


@dataclass(frozen=True)
class BitSerialAccelerator:
    """Parameters of the analytic model; latency unit: cycles.

    Defaults follow the shipped HAQ table's measured structure: 16 bits moved per cycle
    and 4096 one-bit multiply-accumulates per cycle at batch 16 (its memory-bound and
    compute-bound slopes for MobileNetV2's third layer).
    """

    batch: int = 16
    bit_macs_per_cycle: float = 4096.0
    memory_bits_per_cycle: float = 16.0
    layer_overhead_cycles: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value < 0 or (f.name != "layer_overhead_cycles" and value <= 0):
                raise ValueError(f"accelerator parameter {f.name} must be positive, got {value}")

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> BitSerialAccelerator:
        with open(path) as fh:
            data = yaml.safe_load(fh) or {}
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(
                f"{os.fspath(path)}: unknown accelerator parameters {sorted(unknown)}; expected {sorted(known)}"
            )
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def layer_cycles(self, layer: LayerInfo, w_bit: int, a_bit: int) -> float:
        """Cycles of one layer: ``max(compute, memory) + overhead``."""
        compute = self.batch * layer.macs * w_bit * a_bit / self.bit_macs_per_cycle
        moved = layer.weight_count * w_bit + self.batch * layer.input_elements * a_bit
        memory = moved / self.memory_bits_per_cycle
        return max(compute, memory) + self.layer_overhead_cycles

    def table(self, layers: Sequence[LayerInfo]) -> np.ndarray:
        """A HAQ-format table ``[n_layers, 8, 8]`` for ``layers``."""
        out = np.zeros((len(layers), MAX_TABLE_BIT, MAX_TABLE_BIT), dtype=np.float64)
        for i, layer in enumerate(layers):
            for w in range(1, MAX_TABLE_BIT + 1):
                for a in range(1, MAX_TABLE_BIT + 1):
                    out[i, w - 1, a - 1] = self.layer_cycles(layer, w, a)
        return out
