"""Making a policy meet its budget at the end of an episode.

Two strategies, selectable by name:

``haq``
    HAQ's published "action wall": walk the layers from the last to the first,
    lowering each layer's activation bit width, then its weight bit width, by one bit,
    round after round, until the budget holds. It ignores which layers are expensive.
``greedy``
    The default. Repeatedly lower by one bit the decision with the best ratio of cost
    saved to quantization noise added. Saving is measured on every budget still
    violated, each normalised by how far it is exceeded; the noise of a uniform
    quantizer grows by a factor 4 per bit removed, so lowering ``b`` to ``b-1`` adds
    noise proportional to ``4**-b``. The wall therefore trims high bit widths on
    expensive layers first and leaves already-low layers alone, changing the policy
    the agent chose as little as the budget allows.

Only the decisions the agent makes are lowered; pinned layers keep their bits.

Pinning inside the wall (HAQ's own order): with ``pins`` given, the agent chose every
entry, and the pins (HAQ: first layer ``[8, -1]``, last ``[8, 8]``) are written only
when the wall has to run; a raw policy that meets the budget keeps the agent's first and
last bits. With ``"haq"`` this is HAQ's loop exactly (:func:`haq_wall_pinning_inside`);
with ``"greedy"`` the pins are applied first and the greedy wall lowers the rest.
"""

from __future__ import annotations

from collections.abc import Sequence

from haq_gym.cost.budget import Budget
from haq_gym.cost.cost_model import CostModel

ENFORCEMENTS = ("greedy", "haq")


def _holds(cost_model: CostModel, budget: Budget, policy: list[list[int]]) -> bool:
    return budget.satisfied(cost_model.costs(policy))


def haq_wall(
    policy: list[list[int]], free: Sequence[tuple[bool, bool]], cost_model: CostModel, budget: Budget, min_bit: int
) -> list[list[int]]:
    """HAQ's round-robin decrement from the last layer (activation before weight)."""
    policy = [list(p) for p in policy]
    while not _holds(cost_model, budget, policy):
        changed = False
        for i in reversed(range(len(policy))):
            for j in (1, 0):
                if free[i][j] and policy[i][j] > min_bit:
                    policy[i][j] -= 1
                    changed = True
                    if _holds(cost_model, budget, policy):
                        return policy
        if not changed:
            break
    return policy


def apply_pins(policy: list[list[int]], pins: Sequence[Sequence[int | None]]) -> list[list[int]]:
    """``policy`` with every non-``None`` entry of ``pins`` written over it."""
    return [
        [p if p is not None else b for b, p in zip(pair, pin, strict=True)]
        for pair, pin in zip(policy, pins, strict=True)
    ]


def haq_wall_pinning_inside(
    policy: list[list[int]], pins: Sequence[Sequence[int | None]], cost_model: CostModel, budget: Budget, min_bit: int
) -> list[list[int]]:
    """HAQ's wall as its code runs it, pins included.

    While the budget is broken: for each layer from the last to the first, if its
    activation bits exceed ``min_bit`` lower them by one, write the pins, stop if the
    budget holds; then the same for its weight bits. Every entry may be lowered (a pinned
    one is written back by the pins right after), so the pins only appear once the wall
    has run. HAQ's loop guard (the cost of every layer at ``min_bit``) is replaced by
    "stop when a whole round changes nothing", which never loops forever.
    """
    policy = [list(p) for p in policy]
    while not _holds(cost_model, budget, policy):
        before = [list(p) for p in policy]
        for i in reversed(range(len(policy))):
            for j in (1, 0):
                if policy[i][j] > min_bit:
                    policy[i][j] -= 1
                    policy = apply_pins(policy, pins)
                    if _holds(cost_model, budget, policy):
                        return policy
        if policy == before:
            break
    return policy


def greedy_wall(
    policy: list[list[int]], free: Sequence[tuple[bool, bool]], cost_model: CostModel, budget: Budget, min_bit: int
) -> list[list[int]]:
    """Lower the decision with the best (normalised cost saved) / (noise added) ratio, one bit at a time."""
    policy = [list(p) for p in policy]
    ref_lat, ref_flash = cost_model.reference_latency, cost_model.reference_flash
    while True:
        costs = cost_model.costs(policy)
        lat_excess = costs.latency_ratio - budget.latency if budget.latency is not None else 0.0
        flash_excess = costs.flash_ratio - budget.flash if budget.flash is not None else 0.0
        if lat_excess <= 1e-9 and flash_excess <= 1e-9:
            return policy
        best, best_score = None, 0.0
        for i, (w, a) in enumerate(policy):
            for j in (0, 1):
                b = policy[i][j]
                if not free[i][j] or b <= min_bit:
                    continue
                lowered = (w - 1, a) if j == 0 else (w, a - 1)
                saving = 0.0
                if lat_excess > 1e-9:
                    d = cost_model.layer_latency(i, w, a) - cost_model.layer_latency(i, *lowered)
                    saving += d / ref_lat / lat_excess
                if flash_excess > 1e-9 and j == 0:
                    saving += cost_model.layers[i].weight_count / ref_flash / flash_excess
                score = saving * 4.0**b
                if score > best_score:
                    best, best_score = (i, j), score
        if best is None:
            return policy
        policy[best[0]][best[1]] -= 1


def enforce_budget(
    name: str,
    policy: list[list[int]],
    free: Sequence[tuple[bool, bool]],
    cost_model: CostModel,
    budget: Budget,
    min_bit: int,
    pins: Sequence[Sequence[int | None]] | None = None,
) -> list[list[int]]:
    """Apply the enforcement strategy ``name`` (one of :data:`ENFORCEMENTS`).

    ``pins``: pin inside the wall, as HAQ does (see the module docstring); ``None`` means the
    pinned entries are already in ``policy`` and marked not ``free``.
    """
    if name not in ENFORCEMENTS:
        raise ValueError(f"unknown budget enforcement {name!r}; expected one of {', '.join(ENFORCEMENTS)}")
    if pins is not None:
        if _holds(cost_model, budget, policy):
            return [list(p) for p in policy]
        if name == "haq":
            return haq_wall_pinning_inside(policy, pins, cost_model, budget, min_bit)
        free = [(f[0] and pin[0] is None, f[1] and pin[1] is None) for f, pin in zip(free, pins, strict=True)]
        policy = apply_pins(policy, pins)
    if name == "greedy":
        return greedy_wall(policy, free, cost_model, budget, min_bit)
    if name == "haq":
        return haq_wall(policy, free, cost_model, budget, min_bit)
    raise ValueError(f"unknown budget enforcement {name!r}; expected one of {', '.join(ENFORCEMENTS)}")
