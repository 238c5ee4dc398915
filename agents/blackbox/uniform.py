"""Uniform precision: every searched decision at the same bit width, the usual fixed-precision reference."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from agents.blackbox.evaluation import EvaluationBudget, meets_budget
from haq_gym.problem import PolicyProblem
from haq_gym.util import check_known_keys

if TYPE_CHECKING:
    from haq_gym.runs.checkpoint import SearchCheckpoint


def feasible_uniform_bits(problem: PolicyProblem) -> list[int]:
    """Bit widths ``b`` (highest first) for which every decision at ``b`` meets the budget, by the cost model.

    Never empty: the problem rejects budgets that even every decision at ``min_bit`` breaks.
    """
    n = len(problem.decisions)
    return [b for b in range(problem.max_bit, problem.min_bit - 1, -1) if meets_budget(problem, [b] * n)]


def run_uniform(
    problem: PolicyProblem,
    episodes: int,
    seed: int,
    hyperparams: dict[str, Any],
    run_dir: str | os.PathLike,
    progress: bool = True,
    writer: Any = None,
    checkpoint: SearchCheckpoint | None = None,
) -> None:
    """Evaluate the feasible uniform policies, highest bit width first; may use fewer than ``episodes``.

    The first evaluation is the best feasible uniform precision (the highest ``b`` whose
    uniform policy meets the budget without enforcement), the headline baseline. Lower
    feasible widths follow while episodes remain, because rewards that price cost
    (``haq_flash``, ``autoq``, ...) can prefer them. The candidates are known in advance
    and never enforced, so the runner stops early: it spends
    ``min(episodes, number of feasible widths)`` evaluations, at most
    ``max_bit - min_bit + 1``. Deterministic (``seed`` is unused); no hyperparameters.
    Resumable through ``checkpoint`` by replaying its record (:class:`EvaluationBudget`).
    """
    check_known_keys("uniform", hyperparams, frozenset())
    n = len(problem.decisions)
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    candidates = feasible_uniform_bits(problem)[:episodes]
    with EvaluationBudget(problem, len(candidates), "uniform", progress, checkpoint) as evaluate:
        for b in candidates:
            evaluate([b] * n)
