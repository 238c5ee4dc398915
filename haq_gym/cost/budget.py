"""Latency and flash budgets, as ratios to the reference precision, and their feasibility."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from haq_gym.cost.cost_model import CostModel, Costs


@dataclass(frozen=True)
class Budget:
    """Upper bounds on the latency ratio and the flash ratio, each in (0, 1]; ``None`` means unconstrained."""

    latency: float | None = None
    flash: float | None = None

    def __post_init__(self) -> None:
        from haq_gym.validation import check_number

        for name in ("latency", "flash"):
            # A ratio to every layer at the reference precision: above 1 (or infinite) constrains nothing.
            check_number(f"{name} budget", getattr(self, name), 0.0, 1.0, low_open=True, allow_none=True)

    def satisfied(self, costs: Costs, tol: float = 1e-9) -> bool:
        return (self.latency is None or costs.latency_ratio <= self.latency + tol) and (
            self.flash is None or costs.flash_ratio <= self.flash + tol
        )

    def check_feasible(self, cost_model: CostModel, cheapest_policy: list[list[int]]) -> None:
        """Raise if even ``cheapest_policy`` (every free decision at the minimum bit width) breaks the budget."""
        costs = cost_model.costs(cheapest_policy)
        for name, limit, achieved in (
            ("latency", self.latency, costs.latency_ratio),
            ("flash", self.flash, costs.flash_ratio),
        ):
            if limit is not None and achieved > limit:
                raise ValueError(
                    f"{name} budget {limit:g} is impossible: the cheapest policy (every searched layer at "
                    f"its minimum bit width) has a {name} ratio of {achieved:.4f}; choose a budget of at least that"
                )

    def to_dict(self) -> dict[str, Any]:
        return {"latency": self.latency, "flash": self.flash}
