"""What the ``--algo`` registry knows about each search algorithm."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import gymnasium as gym

from haq_gym.problem import PolicyProblem

ENV = "env"
"""The algorithm drives a haq-gym env, one decision per step (the RL agents)."""
PROBLEM = "problem"
"""The algorithm proposes whole policies to the :class:`~haq_gym.problem.PolicyProblem` (the black-box strategies)."""


class Runner(Protocol):
    def __call__(
        self,
        target: gym.Env | PolicyProblem,
        episodes: int,
        seed: int,
        hyperparams: dict[str, Any],
        run_dir: str | os.PathLike,
        progress: bool = True,
        writer: Any = None,
    ) -> None:
        """Drive ``target`` (an env, or the problem, per :attr:`AlgorithmSpec.drives`) for ``episodes`` evaluations.

        A :attr:`AlgorithmSpec.resumable` runner also takes ``checkpoint``, a
        :class:`~haq_gym.runs.checkpoint.SearchCheckpoint`: it starts from the state that
        holds, if any, and hands it its state at every episode end.
        """


@dataclass(frozen=True)
class AlgorithmSpec:
    """A search algorithm: how to run it, which env action modes it drives, which hyperparameters it takes.

    ``drives`` says what the runner is given: :data:`ENV` (a haq-gym env, stepped one
    decision at a time) or :data:`PROBLEM` (the policy problem, evaluated policy by policy).
    Either way every evaluation goes through the problem and reaches its observers.
    ``resumable``: the runner takes ``checkpoint=`` and a killed run can be continued
    (``train_agent.py --resume``).
    """

    runner: Runner | Callable[..., None]
    action_modes: tuple[str, ...]
    hyperparams: frozenset[str]
    description: str = ""
    drives: str = ENV
    resumable: bool = False

    def __post_init__(self) -> None:
        if self.drives not in (ENV, PROBLEM):
            raise ValueError(f"drives must be {ENV!r} or {PROBLEM!r}, got {self.drives!r}")
