"""Greedy sensitivity-ordered bit lowering, in the spirit of AIMET's AMP and HAWQ.

1. Start from every decision at ``max_bit``. If that already meets the budget, evaluate
   it and stop (one evaluation): there is nothing to trade.
2. Probe: for one decision at a time, evaluate a policy in which only that decision is
   lowered, to ``probe_bits`` (see "Probing anchor" below); its accuracy ranks the decision's sensitivity (the lower the
   probe's accuracy, the larger the accuracy drop, the more sensitive). One evaluation per
   decision.
3. Lower: from every decision at ``max_bit``, lower the decisions one bit at a time, least
   sensitive first, round after round (each round walks the decisions in that order and
   takes one bit off each), checking the budget with the cost model after every bit (no
   evaluation) and stopping as soon as it holds. Sensitivity thus decides which decisions
   give up the last bits: every decision ends at one of two adjacent widths, the least
   sensitive ones at the lower. (Taking each decision all the way down before touching the next
   would ignore that quantization error grows about 4x per bit removed: one decision at
   2 bits usually costs more accuracy than two at 4.)
4. Evaluate the resulting policy once.

Probing anchor. The problem enforces the budget on every evaluation, so "all ``max_bit`` but one
decision" would be rewritten by the wall whenever step 2 is needed (the all-``max_bit``
policy breaks the budget, and so does it with one decision lowered). The probes therefore
lower one decision from the *highest feasible uniform* width ``b_u`` instead (see
:mod:`agents.blackbox.uniform`): a probe costs no more than the uniform policy, so the
problem evaluates it unchanged and the measured accuracy belongs to that one change. The
probed width is ``min(probe_bits, b_u - 1)``; when ``b_u == min_bit`` nothing can be
lowered and no probe is run. A decision's cost saving (which decides what to probe when
episodes are short, and breaks ties) is that of lowering it alone from all-``max_bit`` to
the probed width.

Budget. At most ``len(decisions) + 1`` evaluations, never more than ``episodes``: with
fewer episodes, ``episodes - 1`` decisions are probed, those with the largest cost saving
first, and the unprobed ones count as the most sensitive (lowered last, larger saving
first). The runner stops early when it has evaluated the final policy.

``run_dir/sensitivity.csv`` records every decision's cost saving, probe result and
position in the lowering order.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.blackbox.evaluation import EvaluationBudget, meets_budget, policy_costs
from agents.blackbox.uniform import feasible_uniform_bits
from haq_gym.problem import Outcome, PolicyProblem
from haq_gym.util import check_known_keys

if TYPE_CHECKING:
    from haq_gym.runs.checkpoint import SearchCheckpoint

HYPERPARAMS = frozenset({"probe_bits"})
SENSITIVITY_COLUMNS = (
    "decision",
    "layer",
    "layer_name",
    "kind",
    "cost_saving",
    "probed",
    "probe_bits",
    "probe_accuracy",
    "probe_enforced",
    "lowering_order",
    "final_bits",
)


def default_probe_bits(min_bit: int, max_bit: int) -> int:
    """``min_bit + 2``, clipped to ``min_bit..max_bit - 1`` (a probe must lower something)."""
    return max(min_bit, min(min_bit + 2, max_bit - 1))


def cost_savings(problem: PolicyProblem, lowered_bits: int) -> list[float]:
    """Per decision, the budget-normalised cost saved by lowering it alone from all-``max_bit`` to ``lowered_bits``.

    The saving in each constrained ratio is divided by its budget, and the constrained
    ratios are summed, so a flash budget and a latency budget weigh equally when tight.
    """
    n, budget = len(problem.decisions), problem.budget
    top = policy_costs(problem, [problem.max_bit] * n)
    savings = []
    for d in range(n):
        bits = [problem.max_bit] * n
        bits[d] = lowered_bits
        c = policy_costs(problem, bits)
        saving = 0.0
        if budget.latency is not None:
            saving += (top.latency_ratio - c.latency_ratio) / budget.latency
        if budget.flash is not None:
            saving += (top.flash_ratio - c.flash_ratio) / budget.flash
        savings.append(saving)
    return savings


def lower_to_budget(problem: PolicyProblem, order: list[int]) -> list[int]:
    """From all-``max_bit``, take one bit off each decision in ``order``, round after round, until the budget holds."""
    bits = [problem.max_bit] * len(problem.decisions)
    while not meets_budget(problem, bits):
        lowerable = [d for d in order if bits[d] > problem.min_bit]
        if not lowerable:
            break  # every decision at min_bit: the problem rejects budgets that even this breaks
        for d in lowerable:
            bits[d] -= 1
            if meets_budget(problem, bits):
                break
    return bits


def run_greedy_sensitivity(
    problem: PolicyProblem,
    episodes: int,
    seed: int,
    hyperparams: dict[str, Any],
    run_dir: str | os.PathLike,
    progress: bool = True,
    writer: Any = None,
    checkpoint: SearchCheckpoint | None = None,
) -> None:
    """Probe per-decision sensitivity, lower the least sensitive decisions until the budget holds, evaluate.

    Hyperparameter ``probe_bits`` (default ``min_bit + 2`` clipped to ``min_bit..max_bit-1``).
    Spends at most ``min(episodes, len(decisions) + 1)`` evaluations and may stop early
    (see the module docstring). Deterministic (``seed`` is unused); ``writer`` is unused.
    Resumable through ``checkpoint`` by replaying its record (:class:`EvaluationBudget`).
    """
    check_known_keys("greedy-sensitivity", hyperparams, HYPERPARAMS)
    lo, hi, n = problem.min_bit, problem.max_bit, len(problem.decisions)
    probe_bits = int(hyperparams.get("probe_bits", default_probe_bits(lo, hi)))
    if hi > lo and not lo <= probe_bits < hi:
        raise ValueError(f"probe_bits must be in {lo}..{hi - 1} (min_bit..max_bit-1), got {probe_bits}")
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    top = [hi] * n
    if meets_budget(problem, top):
        with EvaluationBudget(problem, 1, "greedy-sensitivity", progress, checkpoint) as evaluate:
            evaluate(top)
        return

    anchor = feasible_uniform_bits(problem)[0]
    probe_width = min(probe_bits, anchor - 1)
    can_probe = probe_width >= lo
    savings = cost_savings(problem, max(probe_width, lo))
    by_saving = sorted(range(n), key=lambda d: (-savings[d], d))
    probed = by_saving[: min(n, episodes - 1)] if can_probe else []
    with EvaluationBudget(problem, len(probed) + 1, "greedy-sensitivity", progress, checkpoint) as evaluate:
        results: dict[int, Outcome] = {}
        for d in probed:
            bits = [anchor] * n
            bits[d] = probe_width
            results[d] = evaluate(bits)
        # Least sensitive first: probed decisions by descending probe accuracy, then the unprobed
        # ones (most sensitive); ties go to the larger cost saving.
        order = sorted(
            range(n), key=lambda d: (d not in results, -results[d].accuracy if d in results else 0.0, -savings[d], d)
        )
        final = lower_to_budget(problem, order)
        _write_sensitivity(Path(run_dir) / "sensitivity.csv", problem, savings, probe_width, results, order, final)
        evaluate(final)


def _write_sensitivity(
    path: Path,
    problem: PolicyProblem,
    savings: list[float],
    probe_width: int,
    results: dict[int, Outcome],
    order: list[int],
    final: list[int],
) -> None:
    """One row per decision: what was probed, what it scored, where it went in the lowering order."""
    position = {d: k for k, d in enumerate(order)}
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(SENSITIVITY_COLUMNS)
        for d, (layer, j) in enumerate(problem.decisions):
            r = results.get(d)
            out.writerow(
                [
                    d,
                    layer,
                    problem.layer_names[layer],
                    "activation" if j else "weight",
                    f"{savings[d]:.6f}",
                    int(r is not None),
                    probe_width if r else "",
                    f"{r.accuracy:.4f}" if r else "",
                    int(r.enforced) if r else "",
                    position[d],
                    final[d],
                ]
            )
