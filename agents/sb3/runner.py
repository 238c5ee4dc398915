"""One runner for every stable-baselines3 / sb3-contrib algorithm, with the budget counted in episodes.

A haq-gym search is budgeted in policy evaluations, i.e. episodes, while SB3's ``learn``
counts env steps. The runner hands ``learn`` the whole budget in steps (``episodes *
episode length``, so SB3's schedules such as a linear learning rate or DQN's epsilon
span the search) and an :class:`EpisodeBudget` callback that stops training on the step
that completes the last episode. That is exact for the on- and off-policy algorithms,
which call the callback after every env step and stop when it returns False (also in
the middle of a rollout: the unfinished rollout is not trained on, which changes no
evaluated policy, only the saved agent). ARS ignores the callback's answer and cannot
stop inside an update, so it gets the whole updates that fit in the budget and the
remaining episodes are played with the trained policy's deterministic ``predict``.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from sb3_contrib import ARS
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger, configure
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.noise import NormalActionNoise
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv
from tqdm import tqdm

from agents.sb3.episode_relabel_buffer import EpisodeRewardReplayBuffer
from haq_gym.runtime import torch_device
from haq_gym.util import check_known_keys

RELABEL_KEY = "episode_reward_relabel"
DEFAULT_POLICY = "MlpPolicy"
# Constructor keywords the runner sets itself; the buffer classes cannot be written in YAML
# (``episode_reward_relabel`` selects the replay buffer). ``device`` is a hyperparameter whose
# default here is cpu, not SB3's auto: SB3's MLP policies are faster on the CPU.
RUNNER_KWARGS = frozenset({"env", "seed", "verbose", "tensorboard_log", "_init_setup_model",
                           "replay_buffer_class", "rollout_buffer_class"})


def allowed_hyperparams(algo_class: type[BaseAlgorithm]) -> frozenset[str]:
    """The constructor keywords of ``algo_class`` a config may set, plus ``episode_reward_relabel`` if off-policy."""
    names = set(inspect.signature(algo_class).parameters) - RUNNER_KWARGS
    if issubclass(algo_class, OffPolicyAlgorithm):
        names.add(RELABEL_KEY)
    return frozenset(names)


def check_hyperparams(name: str, algo_class: type[BaseAlgorithm], hyperparams: dict[str, Any]) -> None:
    """Raise a ValueError naming the unknown keys and listing the allowed ones."""
    check_known_keys(name, hyperparams, allowed_hyperparams(algo_class))


def episode_length(env: gym.Env) -> int:
    """Steps per episode of a haq-gym env: one per decision, the same in every episode."""
    return len(env.unwrapped.decisions)


def steps_from_episodes(hyperparams: dict[str, Any], length: int) -> dict[str, Any]:
    """A copy of ``hyperparams`` with step counts written in episodes turned into env steps.

    A value ``{episodes: N}`` (``learning_starts: {episodes: 20}``) becomes ``N * length``,
    so one config serves envs of any episode length; every other value is kept as it is.
    """
    out = dict(hyperparams)
    for key, value in hyperparams.items():
        if not (isinstance(value, dict) and "episodes" in value):
            continue
        n = value["episodes"]
        if set(value) != {"episodes"} or isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"hyperparameter {key}: a step count in episodes is written {{episodes: N}} with N a "
                             f"non-negative integer, got {value!r}")
        out[key] = n * length
    return out


def _policy_kwargs(value: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``policy_kwargs`` with ``activation_fn`` given by name (YAML ``activation_fn: Tanh``) resolved."""
    out = dict(value)
    name = out.get("activation_fn")
    if isinstance(name, str):
        fn = getattr(torch.nn, name, None)
        if not (isinstance(fn, type) and issubclass(fn, torch.nn.Module)):
            raise ValueError(f"policy_kwargs activation_fn {name!r} is not a torch.nn module such as ReLU or Tanh")
        out["activation_fn"] = fn
    return out


def constructor_kwargs(algo_class: type[BaseAlgorithm], hyperparams: dict[str, Any], action_space: gym.Space,
                       length: int) -> dict[str, Any]:
    """SB3 constructor keywords from config hyperparameters (YAML lists, numbers and names made into SB3's types).

    Step counts written ``{episodes: N}`` become ``N * length`` (:func:`steps_from_episodes`);
    ``policy`` defaults to ``MlpPolicy``; ``train_freq: [1, episode]`` becomes a tuple;
    ``action_noise: 0.3`` becomes Gaussian noise of that std on SB3's ``[-1, 1]`` action
    scale (half of it on the env's ``[0, 1]``); ``episode_reward_relabel: true`` selects
    :class:`EpisodeRewardReplayBuffer`.
    """
    kwargs = steps_from_episodes(hyperparams, length)
    kwargs.setdefault("policy", DEFAULT_POLICY)
    if kwargs.pop(RELABEL_KEY, False):
        starts = kwargs.get("learning_starts", inspect.signature(algo_class).parameters["learning_starts"].default)
        if starts < length - 1:
            raise ValueError(f"{RELABEL_KEY} stores transitions only when their episode ends, so the first gradient "
                             f"step must come after the first episode: learning_starts must be >= {length - 1} "
                             f"(episode length {length} minus 1), got {starts}")
        kwargs["replay_buffer_class"] = EpisodeRewardReplayBuffer
    if isinstance(kwargs.get("train_freq"), list):
        kwargs["train_freq"] = tuple(kwargs["train_freq"])
    noise = kwargs.get("action_noise")
    if isinstance(noise, (int, float)) and not isinstance(noise, bool):
        dim = int(np.prod(action_space.shape))
        kwargs["action_noise"] = NormalActionNoise(mean=np.zeros(dim), sigma=np.full(dim, float(noise)))
    if isinstance(kwargs.get("policy_kwargs"), dict):
        kwargs["policy_kwargs"] = _policy_kwargs(kwargs["policy_kwargs"])
    return kwargs


class EpisodeBudget(BaseCallback):
    """Stops ``learn`` on the step that completes the ``episodes``-th episode; shows a tqdm bar over episodes.

    Episodes are counted on the :class:`~stable_baselines3.common.monitor.Monitor` wrapper
    rather than from ``dones`` in the callback's locals (as ``StopTrainingOnMaxEpisodes``
    does), because ARS calls ``on_step`` without setting them.
    """

    def __init__(self, monitor: Monitor, episodes: int, progress: bool, desc: str) -> None:
        super().__init__()
        self.monitor = monitor
        self.episodes = episodes
        self.bar = tqdm(total=episodes, disable=not progress, desc=desc)

    def refresh(self) -> int:
        """Move the bar to the finished episodes and return their count."""
        rewards = self.monitor.get_episode_rewards()
        if len(rewards) > self.bar.n:
            self.bar.set_postfix(reward=f"{rewards[-1]:.4f}", best=f"{max(rewards):.4f}", refresh=False)
            self.bar.update(len(rewards) - self.bar.n)
        return len(rewards)

    def _on_step(self) -> bool:
        return self.refresh() < self.episodes


def learn_timesteps(model: BaseAlgorithm, episodes: int, length: int) -> int:
    """Env steps to hand ``learn``: the budget, or for ARS the whole updates that fit in it."""
    if isinstance(model, ARS):
        per_update = 2 * model.n_delta * model.n_eval_episodes
        return episodes // per_update * per_update * length
    return episodes * length


def _finish_with_predict(model: BaseAlgorithm, vec_env: VecEnv, budget: EpisodeBudget) -> None:
    """Play the episodes ``learn`` left of the budget with the policy's deterministic actions (in practice: ARS)."""
    if budget.refresh() >= budget.episodes:
        return
    obs = vec_env.reset()
    while budget.refresh() < budget.episodes:
        action, _ = model.predict(obs, deterministic=True)
        obs, _, _, _ = vec_env.step(action)


def train_sb3(name: str, algo_class: type[BaseAlgorithm], env: gym.Env, episodes: int, seed: int,
              hyperparams: dict[str, Any], tensorboard_log: str | None = None,
              progress: bool = True) -> BaseAlgorithm:
    """Train ``algo_class`` on ``env`` for exactly ``episodes`` episodes and return the model.

    ``env`` is wrapped in a Monitor (which counts the episodes) and a one-env DummyVecEnv;
    the VecEnv is not closed, so ``env`` stays open for its owner. The model runs on the
    CPU (SB3's MLP policies are faster there) unless the hyperparameters set ``device``,
    with SB3's ``seed``.
    """
    if episodes < 0:
        raise ValueError(f"episodes must be >= 0, got {episodes}")
    check_hyperparams(name, algo_class, hyperparams)
    length = episode_length(env)
    kwargs = constructor_kwargs(algo_class, hyperparams, env.action_space, length)
    try:
        device = torch_device(str(kwargs.pop("device", "cpu")))
    except ValueError as err:
        raise ValueError(f"{name} hyperparameter device: {err}") from None
    monitor = Monitor(env)
    vec_env = DummyVecEnv([lambda: monitor])
    model = algo_class(env=vec_env, seed=seed, verbose=0, device=device, **kwargs)
    # SB3's scalars go into the run's own TensorBoard folder (one run there, not an extra <algo>_1);
    # without a folder SB3 would create an empty SB3-<time> folder in the temp dir on every learn().
    model.set_logger(configure(tensorboard_log, ["tensorboard"]) if tensorboard_log is not None
                     else Logger(folder=None, output_formats=[]))
    budget = EpisodeBudget(monitor, episodes, progress, name)
    try:
        model.learn(total_timesteps=learn_timesteps(model, episodes, length), callback=budget)
        model.logger.dump(model.num_timesteps)  # the values since the last log interval, which short runs never reach
        _finish_with_predict(model, vec_env, budget)
    finally:
        budget.bar.close()
        model.logger.close()
    return model


@dataclass(frozen=True)
class SB3Runner:
    """The :class:`agents.spec.Runner` of one SB3 algorithm: trains it, then saves ``run_dir/agent.zip``."""

    name: str
    algo_class: type[BaseAlgorithm]

    def __call__(self, env: gym.Env, episodes: int, seed: int, hyperparams: dict[str, Any],
                 run_dir: str | os.PathLike, progress: bool = True, writer: Any = None) -> None:
        """Run the search; SB3's own scalars go to ``run_dir/tensorboard`` beside the run's when ``writer`` is given."""
        tensorboard_log = os.fspath(Path(run_dir) / "tensorboard") if writer is not None else None
        model = train_sb3(self.name, self.algo_class, env, episodes, seed, hyperparams, tensorboard_log, progress)
        model.save(Path(run_dir) / "agent.zip")
