"""Search algorithms selectable with ``train_agent.py --algo NAME``.

A runner takes the (recorded) env, the episode budget, the seed and the algorithm's
hyperparameters, and drives the env; the run folder is written by the env's
:class:`~haq_gym.runs.RunRecorder`, so every algorithm leaves the same files.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import gymnasium as gym

from agents.haq_ddpg import HAQDDPGConfig, train_haq_ddpg

Runner = Callable[..., None]


def run_haq_ddpg(env: gym.Env, episodes: int, seed: int, hyperparams: dict[str, Any], run_dir: str | os.PathLike,
                 progress: bool = True, writer: Any = None) -> None:
    """HAQ's DDPG search; saves the agent to ``run_dir/agent.pt``."""
    config = HAQDDPGConfig(**hyperparams)
    agent = train_haq_ddpg(env, episodes=episodes, seed=seed, config=config, progress=progress, writer=writer)
    agent.save(os.path.join(run_dir, "agent.pt"))


_ALGOS: dict[str, tuple[Runner, type]] = {
    "haq-ddpg": (run_haq_ddpg, HAQDDPGConfig),
}


def algo_names() -> tuple[str, ...]:
    return tuple(sorted(_ALGOS))


def get_runner(name: str) -> Runner:
    if name not in _ALGOS:
        raise ValueError(f"unknown algorithm {name!r}; expected one of {', '.join(algo_names())}")
    return _ALGOS[name][0]


def check_hyperparams(name: str, hyperparams: dict[str, Any]) -> None:
    """Raise if ``hyperparams`` names a field the algorithm does not take."""
    get_runner(name)
    allowed = {f.name for f in dataclasses.fields(_ALGOS[name][1])}
    unknown = sorted(set(hyperparams) - allowed)
    if unknown:
        raise ValueError(f"{name} does not take hyperparameter(s) {', '.join(unknown)}; "
                         f"it takes {', '.join(sorted(allowed))}")
