"""HAQ's reward relabelling as a stable-baselines3 replay buffer.

HAQ's envs pay 0 on every step but the last; HAQ's DDPG stores every transition of an
episode with the episode's *final* reward, so each decision is credited with the outcome
of the whole policy. :class:`EpisodeRewardReplayBuffer` does the same for SB3's
off-policy algorithms (DDPG, TD3, SAC, TQC, DQN): select it with the runner's
hyperparameter ``episode_reward_relabel: true``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer


class EpisodeRewardReplayBuffer(ReplayBuffer):
    """A :class:`~stable_baselines3.common.buffers.ReplayBuffer` that stores whole episodes, relabelled.

    ``add`` keeps the transitions of the episode in progress aside ("pending"); when a
    transition ends the episode (``done``, which SB3's VecEnvs set on termination *and* on
    truncation), every pending transition is written to the buffer with that last
    transition's reward. Each transition keeps its own ``done`` flag and ``infos``, so
    timeouts (``TimeLimit.truncated``) are handled by the base class as usual.

    Pending transitions cannot be sampled: SB3's off-policy algorithms may take gradient
    steps in the middle of an episode (``train_freq`` in steps), and those steps only see
    finished episodes. Before the first episode has ended the buffer is empty, so
    ``learning_starts`` must be at least the episode length minus one (the runner checks
    this). Only one env is supported (``n_envs=1``): episodes of several envs interleave
    and would need one pending list per env.
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: torch.device | str = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
    ) -> None:
        if n_envs != 1:
            raise ValueError(f"EpisodeRewardReplayBuffer supports a single env (n_envs=1), got n_envs={n_envs}")
        super().__init__(
            buffer_size,
            observation_space,
            action_space,
            device=device,
            n_envs=n_envs,
            optimize_memory_usage=optimize_memory_usage,
            handle_timeout_termination=handle_timeout_termination,
        )
        self.pending: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]] = []

    def add(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        """Hold the transition; at the episode's end store the whole episode with its final reward."""
        # Copies: SB3 may reuse the arrays it passes in.
        self.pending.append((np.array(obs), np.array(next_obs), np.array(action), np.array(done), infos))
        if not np.asarray(done).reshape(-1)[0]:
            return
        final_reward = np.array(reward, dtype=np.float32).reshape(self.n_envs)
        for p_obs, p_next_obs, p_action, p_done, p_infos in self.pending:
            super().add(p_obs, p_next_obs, p_action, final_reward, p_done, p_infos)
        self.pending = []

    def reset(self) -> None:
        """Empty the buffer, pending transitions included."""
        super().reset()
        self.pending = []
