"""What one evaluation of a policy yields."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from haq_gym.cost import Costs


@dataclass(frozen=True)
class Outcome:
    """One evaluated policy.

    ``policy`` is the policy as evaluated (after the enforcement wall), ``proposed`` as the
    strategy or agent proposed it; both are ``[[w_bit, a_bit], ...]``. ``accuracy`` and
    ``reference_accuracy`` are top-1 percentages on the search validation subset;
    ``costs`` are the evaluated policy's; ``extras`` hold figures particular to one flow
    (the k-means flow's ``size_bytes`` and ``file_bytes``).
    """

    policy: list[list[int]]
    proposed: list[list[int]]
    accuracy: float
    reference_accuracy: float
    costs: Costs
    reward: float
    budget_met: bool
    cached: bool
    eval_time_s: float
    extras: Mapping[str, float] = field(default_factory=dict)

    @property
    def enforced(self) -> bool:
        """Whether the enforcement wall changed the proposed policy."""
        return self.policy != self.proposed

    @property
    def latency_ratio(self) -> float:
        return self.costs.latency_ratio

    @property
    def flash_ratio(self) -> float:
        return self.costs.flash_ratio

    @property
    def bitops_ratio(self) -> float:
        return self.costs.bitops_ratio

    def info(self) -> dict[str, Any]:
        """The final-step ``info`` of an env episode (the keys the envs document; policies are copies)."""
        return {
            "reward": self.reward,
            "accuracy": self.accuracy,
            "reference_accuracy": self.reference_accuracy,
            "latency_ratio": self.latency_ratio,
            "flash_ratio": self.flash_ratio,
            "bitops_ratio": self.bitops_ratio,
            **self.extras,
            "policy": [list(p) for p in self.policy],
            "agent_policy": [list(p) for p in self.proposed],
            "budget_met": self.budget_met,
            "eval_time_s": self.eval_time_s,
            "cached": self.cached,
            "is_success": self.budget_met,
        }  # SB3's convention: its success-rate logging reads this
