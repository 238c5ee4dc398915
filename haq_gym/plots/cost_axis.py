"""Which cost a run was budgeted on, so every figure puts that cost on its axis."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class CostAxis:
    """A cost (its short name), its column in ``episodes.csv``, its label, and its budget (``None``: unbudgeted)."""

    name: str
    column: str
    label: str
    budget: float | None = None


LATENCY = CostAxis("latency", "latency_ratio", "latency ratio (to the reference precision)")
FLASH = CostAxis("flash", "flash_ratio", "flash ratio (to the reference precision)")
SIZE = CostAxis("size", "flash_ratio", "size ratio (to the 32-bit float model)")


def budgeted_axis(budget: Mapping[str, object] | None, weight_only: bool = False) -> CostAxis:
    """The axis of the budgeted cost: latency first, else flash; k-means (weight-only) runs budget size.

    ``budget`` is a policy file's or a run's budget mapping (``{"latency": 0.5, "flash": None, ...}``).
    With no budget at all, latency is shown without a budget line.
    """
    budget = budget or {}
    latency, flash = _limit(budget.get("latency")), _limit(budget.get("flash"))
    if weight_only:
        return replace(SIZE, budget=flash)
    if latency is None and flash is not None:
        return replace(FLASH, budget=flash)
    return replace(LATENCY, budget=latency)


def _limit(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]
