"""Episode rewards, selectable by name.

Accuracies are in percent (top-1, or top-5 with the env's ``use_top5``); ``reference`` is
the float model's accuracy measured the same way (see :mod:`haq_gym.evaluation`). Costs are
the ratios of :class:`haq_gym.cost.Costs`.

``haq``        HAQ's reward, ``0.1 * (acc - reference)``.
``haq_inverse_cost``  the variant HAQ's code carries but does not use: HAQ's reward plus
               ``1 / latency_ratio`` (its ``cost_ratio``, current over reference table cost).
``haq_flash``  seed 000's default (the haq-lsq fork, strategy 0): HAQ's reward plus
               ``0.1 * 0.75 / flash_ratio``, a bonus for smaller weights.
``releq``      the ReLeQ-style shaped reward of that fork: with
               ``q = (latency + 120 * flash) / (reference latency + 120 * reference flash)``
               (120 weighs memory against latency, the fork's constant) and ``s = acc / reference``,
               ``(1 - q**0.2) * s**(0.4 / s)``, falling back to HAQ's reward when ``s < 0.4``.
``autoq``      the AutoQ-style reward of that fork, ``log(acc**2 / sqrt(latency_ratio * flash_ratio))``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from haq_gym.cost.cost_model import CostModel, Costs

RewardFn = Callable[[float, float, Costs, CostModel], float]


def haq_reward(acc: float, reference: float, costs: Costs, cost_model: CostModel) -> float:
    return 0.1 * (acc - reference)


def haq_inverse_cost_reward(acc: float, reference: float, costs: Costs, cost_model: CostModel) -> float:
    return 0.1 * (acc - reference) + 1.0 / costs.latency_ratio


def haq_flash_reward(acc: float, reference: float, costs: Costs, cost_model: CostModel) -> float:
    return 0.1 * (acc - reference + 0.75 / costs.flash_ratio)


def releq_reward(acc: float, reference: float, costs: Costs, cost_model: CostModel) -> float:
    memory_weight = 120.0
    q = (costs.latency + memory_weight * costs.flash_bits) / (
        cost_model.reference_latency + memory_weight * cost_model.reference_flash
    )
    s = acc / reference if reference > 0 else 0.0
    if s < 0.4:
        return 0.1 * (acc - reference)
    return float((1.0 - q**0.2) * s ** (0.4 / s))


def autoq_reward(acc: float, reference: float, costs: Costs, cost_model: CostModel) -> float:
    return math.log(max(acc, 1e-6) ** 2 / math.sqrt(costs.latency_ratio * costs.flash_ratio))


REWARDS: dict[str, RewardFn] = {
    "haq": haq_reward,
    "haq_inverse_cost": haq_inverse_cost_reward,
    "haq_flash": haq_flash_reward,
    "releq": releq_reward,
    "autoq": autoq_reward,
}


def get_reward(name: str) -> RewardFn:
    try:
        return REWARDS[name]
    except KeyError:
        raise ValueError(f"unknown reward {name!r}; expected one of {', '.join(REWARDS)}") from None
