"""Uniform precision: every searched decision at the same bit width, the usual fixed-precision reference."""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym

from agents.blackbox.play import EvaluationBudget, meets_budget
from haq_gym.util import check_known_keys


def feasible_uniform_bits(env: gym.Env) -> list[int]:
    """Bit widths ``b`` (highest first) for which every decision at ``b`` meets the budget, by the cost model.

    Never empty: the env rejects budgets that even every decision at ``min_bit`` breaks.
    """
    base = env.unwrapped
    n = len(base.decisions)
    return [b for b in range(base.max_bit, base.min_bit - 1, -1) if meets_budget(env, [b] * n)]


def run_uniform(env: gym.Env, episodes: int, seed: int, hyperparams: dict[str, Any],
                run_dir: str | os.PathLike, progress: bool = True, writer: Any = None) -> None:
    """Evaluate the feasible uniform policies, highest bit width first; may use fewer than ``episodes``.

    The first evaluation is the best feasible uniform precision (the highest ``b`` whose
    uniform policy meets the budget without enforcement), the headline baseline. Lower
    feasible widths follow while episodes remain, because rewards that price cost
    (``haq_flash``, ``autoq``, ...) can prefer them. The candidates are known in advance
    and never enforced, so the runner stops early: it spends
    ``min(episodes, number of feasible widths)`` evaluations, at most
    ``max_bit - min_bit + 1``. Deterministic (``seed`` is unused); no hyperparameters.
    """
    check_known_keys("uniform", hyperparams, frozenset())
    n = len(env.unwrapped.decisions)
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    candidates = feasible_uniform_bits(env)[:episodes]
    with EvaluationBudget(env, len(candidates), "uniform", progress) as evaluate:
        for b in candidates:
            evaluate([b] * n)
