"""Random search: the baseline every smarter search has to beat."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from agents.blackbox.evaluation import EvaluationBudget
from haq_gym.problem import PolicyProblem
from haq_gym.util import check_known_keys


def run_random_search(problem: PolicyProblem, episodes: int, seed: int, hyperparams: dict[str, Any],
                      run_dir: str | os.PathLike, progress: bool = True, writer: Any = None) -> None:
    """Evaluate ``episodes`` policies with every decision's bits drawn uniformly from ``min_bit..max_bit``.

    Draws come from ``numpy.random.default_rng(seed)``, so a seed repeats the run. The
    problem's enforcement wall makes each draw meet the budget. Takes no hyperparameters;
    ``run_dir`` and ``writer`` are unused (the problem's recorder writes every evaluation).
    """
    check_known_keys("random", hyperparams, frozenset())
    rng = np.random.default_rng(seed)
    with EvaluationBudget(problem, episodes, "random", progress) as evaluate:
        for _ in range(episodes):
            evaluate(rng.integers(problem.min_bit, problem.max_bit + 1, size=len(problem.decisions)).tolist())
