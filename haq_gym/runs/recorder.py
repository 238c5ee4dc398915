"""A wrapper that records every finished episode into the run folder as it happens.

Whatever agent drives the env (HAQ's DDPG, an SB3 algorithm, a black-box search), the
run folder is the same: ``episodes.csv`` (one row per episode, appended and flushed, so
a killed run keeps every finished episode), ``best_policy.json`` (rewritten atomically
whenever a better policy that meets the budget appears) and TensorBoard events.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any

import gymnasium as gym

EPISODE_COLUMNS = ("episode", "reward", "accuracy", "latency_ratio", "flash_ratio", "bitops_ratio", "budget_met",
                   "cached", "eval_time_s", "w_bits", "a_bits")


class RunRecorder(gym.Wrapper):
    """Writes ``episodes.csv``, ``best_policy.json`` and TensorBoard scalars as episodes end.

    The wrapped env must be a haq-gym env (its final ``info`` carries the policy and its
    costs, and ``unwrapped.policy_file`` turns it into a policy file).
    """

    def __init__(self, env: gym.Env, run_dir: str | os.PathLike, found_by: dict[str, Any] | None = None,
                 tensorboard: bool = True) -> None:
        super().__init__(env)
        self.run_dir = Path(run_dir)
        self.found_by = dict(found_by or {})
        self.episodes = 0
        self.best_reward = -math.inf
        self.best_episode: int | None = None
        self.csv_path = self.run_dir / "episodes.csv"
        self.best_path = self.run_dir / "best_policy.json"
        new = not self.csv_path.exists()
        self._csv = open(self.csv_path, "a", newline="")
        self._writer = csv.writer(self._csv)
        if new:
            self._writer.writerow(EPISODE_COLUMNS)
            self._csv.flush()
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=os.fspath(self.run_dir / "tensorboard"))

    @property
    def tensorboard_writer(self):
        """The run's ``SummaryWriter`` (agents may log their own scalars to it), or None."""
        return self._tb

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if terminated and "policy" in info:
            self._record(info)
        return obs, reward, terminated, truncated, info

    def _record(self, info: dict[str, Any]) -> None:
        self.episodes += 1
        n = self.episodes
        policy = info["policy"]
        self._writer.writerow([n, f"{info['reward']:.6f}", f"{info['accuracy']:.4f}", f"{info['latency_ratio']:.6f}",
                               f"{info['flash_ratio']:.6f}", f"{info['bitops_ratio']:.6f}", int(info["budget_met"]),
                               int(info["cached"]), f"{info['eval_time_s']:.4f}",
                               " ".join(str(w) for w, _ in policy), " ".join(str(a) for _, a in policy)])
        self._csv.flush()
        if self._tb is not None:
            for key in ("reward", "accuracy", "latency_ratio", "flash_ratio", "bitops_ratio"):
                self._tb.add_scalar(f"episode/{key}", float(info[key]), n)
        if info["budget_met"] and info["reward"] > self.best_reward:
            self.best_reward = float(info["reward"])
            self.best_episode = n
            self.env.unwrapped.policy_file(info, found_by={**self.found_by, "episode": n}).save(self.best_path)
            if self._tb is not None:
                self._tb.add_scalar("search/best_reward", self.best_reward, n)

    def close(self) -> None:
        if not self._csv.closed:
            self._csv.close()
        if self._tb is not None:
            self._tb.close()
        super().close()
