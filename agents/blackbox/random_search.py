"""Random search: the baseline every smarter search has to beat."""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym
import numpy as np

from agents.blackbox.play import EvaluationBudget
from haq_gym.util import check_known_keys


def run_random_search(env: gym.Env, episodes: int, seed: int, hyperparams: dict[str, Any],
                      run_dir: str | os.PathLike, progress: bool = True, writer: Any = None) -> None:
    """Evaluate ``episodes`` policies with every decision's bits drawn uniformly from ``min_bit..max_bit``.

    Draws come from ``numpy.random.default_rng(seed)``, so a seed repeats the run. The
    env's enforcement wall makes each draw meet the budget. Takes no hyperparameters;
    ``run_dir`` and ``writer`` are unused (the env's recorder writes every episode).
    """
    check_known_keys("random", hyperparams, frozenset())
    base = env.unwrapped
    rng = np.random.default_rng(seed)
    with EvaluationBudget(env, episodes, "random", progress) as evaluate:
        for _ in range(episodes):
            evaluate(rng.integers(base.min_bit, base.max_bit + 1, size=len(base.decisions)).tolist())
