"""Random search: the baseline every smarter search has to beat."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.blackbox.evaluation import EvaluationBudget
from haq_gym.problem import PolicyProblem
from haq_gym.util import check_known_keys

RNG_FILE = "rng.pt"


def run_random_search(
    problem: PolicyProblem,
    episodes: int,
    seed: int,
    hyperparams: dict[str, Any],
    run_dir: str | os.PathLike,
    progress: bool = True,
    writer: Any = None,
    checkpoint: Any = None,
) -> None:
    """Evaluate ``episodes`` policies with every decision's bits drawn uniformly from ``min_bit..max_bit``.

    Draws come from ``numpy.random.default_rng(seed)``, so a seed repeats the run. The
    problem's enforcement wall makes each draw meet the budget. Takes no hyperparameters;
    ``run_dir`` and ``writer`` are unused (the problem's recorder writes every evaluation).
    With ``checkpoint`` (a :class:`~haq_gym.runs.checkpoint.SearchCheckpoint`) the generator's
    state is saved at episode ends and restored on resume.
    """
    check_known_keys("random", hyperparams, frozenset())
    rng = np.random.default_rng(seed)
    done = 0
    if checkpoint is not None and checkpoint.episodes:

        def load(folder: Path) -> None:
            rng.bit_generator.state = torch.load(folder / RNG_FILE, weights_only=True)

        checkpoint.restore(load)
        done = checkpoint.episodes
    with EvaluationBudget(problem, episodes - done, "random", progress) as evaluate:
        for _ in range(done, episodes):
            evaluate(rng.integers(problem.min_bit, problem.max_bit + 1, size=len(problem.decisions)).tolist())
            done += 1
            if checkpoint is not None:
                checkpoint.episode_end(done, lambda folder: torch.save(rng.bit_generator.state, folder / RNG_FILE))
