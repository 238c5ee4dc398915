"""What the ``--algo`` registry knows about each search algorithm."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import gymnasium as gym


class Runner(Protocol):
    def __call__(self, env: gym.Env, episodes: int, seed: int, hyperparams: dict[str, Any],
                 run_dir: str | os.PathLike, progress: bool = True, writer: Any = None) -> None:
        """Drive ``env`` (a recorded haq-gym env) for exactly ``episodes`` episodes (= policy evaluations)."""


@dataclass(frozen=True)
class AlgorithmSpec:
    """A search algorithm: how to run it, which env action modes it drives, which hyperparameters it takes."""

    runner: Runner | Callable[..., None]
    action_modes: tuple[str, ...]
    hyperparams: frozenset[str]
    description: str = ""
