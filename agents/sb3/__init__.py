"""stable-baselines3 and sb3-contrib algorithms as haq-gym search agents (``--algo ppo``, ``--algo sac``...).

Every algorithm runs through :class:`~agents.sb3.runner.SB3Runner`: the budget is counted
in episodes, SB3's ``seed`` makes runs repeatable on CPU, and the model is saved to
``run_dir/agent.zip``. The off-policy ones take ``episode_reward_relabel: true``, HAQ's
trick of storing every transition with its episode's final reward
(:class:`~agents.sb3.episode_relabel_buffer.EpisodeRewardReplayBuffer`). Every one of them
resumes (``train_agent.py --resume``) from checkpoints taken at episode boundaries
(:class:`~agents.sb3.runner.EpisodeCheckpoint`), except with ``use_sde`` (see
:func:`agents.registry.resume_refusal`).

The first action mode of each spec is the one ``train_agent.py`` picks by default: the
on-policy algorithms start with ``discrete`` (a categorical choice among bit widths
needs no clipping of a Gaussian at the ends of ``[0, 1]``).
"""

from __future__ import annotations

from sb3_contrib import ARS, TQC, TRPO, MaskablePPO
from stable_baselines3 import A2C, DDPG, DQN, PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm

from agents.sb3.episode_relabel_buffer import EpisodeRewardReplayBuffer
from agents.sb3.runner import SB3Runner, allowed_hyperparams, check_hyperparams, train_sb3
from agents.spec import AlgorithmSpec

_CONTINUOUS = ("continuous",)
_DISCRETE = ("discrete",)
_BOTH = ("discrete", "continuous")

_TABLE: dict[str, tuple[type[BaseAlgorithm], tuple[str, ...], str]] = {
    "ddpg": (DDPG, _CONTINUOUS, "stable-baselines3 DDPG"),
    "td3": (TD3, _CONTINUOUS, "stable-baselines3 TD3"),
    "sac": (SAC, _CONTINUOUS, "stable-baselines3 SAC"),
    "ppo": (PPO, _BOTH, "stable-baselines3 PPO"),
    "a2c": (A2C, _BOTH, "stable-baselines3 A2C"),
    "dqn": (DQN, _DISCRETE, "stable-baselines3 DQN"),
    "tqc": (TQC, _CONTINUOUS, "sb3-contrib TQC"),
    "trpo": (TRPO, _BOTH, "sb3-contrib TRPO"),
    "ars": (ARS, ("continuous", "discrete"), "sb3-contrib ARS (augmented random search)"),
    "maskable-ppo": (
        MaskablePPO,
        _DISCRETE,
        "sb3-contrib MaskablePPO, only picks bit widths that keep the budget reachable (the env's action_masks())",
    ),
}

ALGORITHMS: dict[str, AlgorithmSpec] = {
    name: AlgorithmSpec(
        SB3Runner(name, cls),
        modes,
        allowed_hyperparams(cls),
        description,
        resumable=True,
    )
    for name, (cls, modes, description) in _TABLE.items()
}

__all__ = [
    "ALGORITHMS",
    "EpisodeRewardReplayBuffer",
    "SB3Runner",
    "allowed_hyperparams",
    "check_hyperparams",
    "train_sb3",
]
