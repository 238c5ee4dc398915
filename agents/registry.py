"""Search algorithms selectable with ``train_agent.py --algo NAME``.

``haq-ddpg`` (HAQ's agent), the stable-baselines3 / sb3-contrib algorithms of
:mod:`agents.sb3`, and the black-box baselines of :mod:`agents.blackbox`.

A runner takes the env (RL agents) or its policy problem (black-box strategies, see
:attr:`~agents.spec.AlgorithmSpec.drives`), the episode budget, the seed and the algorithm's
hyperparameters; the run folder is written by the :class:`~haq_gym.runs.RunRecorder` that
observes the problem, so every algorithm leaves the same files.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from typing import Any

import gymnasium as gym

from agents.blackbox import ALGORITHMS as BLACKBOX_ALGORITHMS
from agents.haq_ddpg import HAQDDPGConfig, train_haq_ddpg
from agents.sb3 import ALGORITHMS as SB3_ALGORITHMS
from agents.sb3 import SB3Runner
from agents.spec import AlgorithmSpec, Runner
from haq_gym.presets import agent_preset
from haq_gym.util import check_known_keys


def run_haq_ddpg(
    env: gym.Env,
    episodes: int,
    seed: int,
    hyperparams: dict[str, Any],
    run_dir: str | os.PathLike,
    progress: bool = True,
    writer: Any = None,
    checkpoint: Any = None,
) -> None:
    """HAQ's DDPG search (resumable from ``checkpoint``); saves the agent to ``run_dir/agent.pt``.

    An env built with ``preset="haq"`` also gets HAQ's replay size (``replay_unit="layer"``).
    """
    hyperparams = agent_preset(getattr(env.unwrapped, "preset", None), "haq-ddpg", hyperparams)
    config = HAQDDPGConfig(**hyperparams)
    agent = train_haq_ddpg(
        env, episodes=episodes, seed=seed, config=config, progress=progress, writer=writer, checkpoint=checkpoint
    )
    agent.save(os.path.join(run_dir, "agent.pt"))


_ALGOS: dict[str, AlgorithmSpec] = {
    "haq-ddpg": AlgorithmSpec(
        run_haq_ddpg,
        ("continuous",),
        frozenset(f.name for f in dataclasses.fields(HAQDDPGConfig)),
        "HAQ's DDPG (Wang et al. 2019), ported faithfully",
        resumable=True,
    ),
    **SB3_ALGORITHMS,
    **BLACKBOX_ALGORITHMS,
}


def algo_names() -> tuple[str, ...]:
    return tuple(sorted(_ALGOS))


def get_spec(name: str) -> AlgorithmSpec:
    if name not in _ALGOS:
        raise ValueError(f"unknown algorithm {name!r}; expected one of {', '.join(algo_names())}")
    return _ALGOS[name]


def get_runner(name: str) -> Runner:
    return get_spec(name).runner


def check_hyperparams(name: str, hyperparams: dict[str, Any]) -> None:
    """Raise if ``hyperparams`` names a key the algorithm does not take."""
    check_known_keys(name, hyperparams, get_spec(name).hyperparams)


def check_hyperparam_values(name: str, hyperparams: dict[str, Any]) -> None:
    """Names, then types (each scalar like its default) and the agent's own range checks, before anything runs.

    HAQ-DDPG builds its config (``warmup=abc`` or ``warmup=-1`` fail here); an SB3 agent's
    scalars must have the type of its constructor default (lists and mappings, such as
    ``train_freq: [1, episode]`` or ``policy_kwargs``, are SB3's to check).
    """
    from haq_gym.validation import check_like_defaults

    check_hyperparams(name, hyperparams)
    runner = get_spec(name).runner
    if name == "haq-ddpg":
        check_like_defaults(name, hyperparams, {f.name: f.default for f in dataclasses.fields(HAQDDPGConfig)})
        HAQDDPGConfig(**hyperparams)
    elif isinstance(runner, SB3Runner):
        defaults = {key: p.default for key, p in inspect.signature(runner.algo_class).parameters.items()}
        scalars = {k: v for k, v in hyperparams.items() if not isinstance(v, (list, tuple, dict))}
        check_like_defaults(name, scalars, defaults)


def resumable_algos() -> tuple[str, ...]:
    """The algorithms whose runs ``train_agent.py --resume`` can continue."""
    return tuple(name for name in algo_names() if _ALGOS[name].resumable)


def resume_refusal(name: str, hyperparams: dict[str, Any]) -> str | None:
    """Why a run of ``name`` with ``hyperparams`` cannot be checkpointed and resumed exactly; None when it can.

    SB3's state-dependent exploration (``use_sde``) draws new noise at the start of every
    rollout, before the callback that takes the checkpoint at that episode boundary, so a
    resumed run would draw it again from other RNG states.
    """
    if not get_spec(name).resumable:
        return f"{name} runs cannot be resumed; the algorithms that can: {', '.join(resumable_algos())}"
    if isinstance(get_spec(name).runner, SB3Runner) and hyperparams.get("use_sde"):
        return (
            f"{name} with use_sde cannot be resumed exactly: SB3 draws the exploration noise at the start of a "
            "rollout, before the episode boundary where the checkpoint is taken; drop use_sde to resume"
        )
    return None


def check_action_mode(name: str, action_mode: str) -> None:
    """Raise if the algorithm cannot drive an env in ``action_mode``."""
    modes = get_spec(name).action_modes
    if action_mode not in modes:
        raise ValueError(f"{name} cannot drive action_mode={action_mode!r}; it supports {', '.join(modes)}")
