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
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
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
RUNNER_KWARGS = frozenset(
    {"env", "seed", "verbose", "tensorboard_log", "_init_setup_model", "replay_buffer_class", "rollout_buffer_class"}
)


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
            raise ValueError(
                f"hyperparameter {key}: a step count in episodes is written {{episodes: N}} with N a "
                f"non-negative integer, got {value!r}"
            )
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


def constructor_kwargs(
    algo_class: type[BaseAlgorithm], hyperparams: dict[str, Any], action_space: gym.Space, length: int
) -> dict[str, Any]:
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
            raise ValueError(
                f"{RELABEL_KEY} stores transitions only when their episode ends, so the first gradient "
                f"step must come after the first episode: learning_starts must be >= {length - 1} "
                f"(episode length {length} minus 1), got {starts}"
            )
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


class EpisodeCheckpoint(BaseCallback):
    """Hands the model's state to a :class:`~haq_gym.runs.checkpoint.SearchCheckpoint` at episode boundaries.

    The boundary is the start of a rollout right after an episode's last step: by then SB3
    has stored that step's transition and trained on it (off-policy: on the replay buffer;
    on-policy: on the rollout just collected, whose buffer is emptied at a rollout's start),
    and nothing of the next episode has happened. (With a rollout or ``train_freq`` in steps
    that does not divide the episode length such starts are rare, and checkpoints with
    them.) The state is the model (``save``: policy, optimiser, schedules, counters), its
    replay buffer (``save_replay_buffer``, off-policy) and the action space's RNG (SB3 draws
    warm-up actions from it); the global RNGs are the checkpoint's. ARS draws its
    perturbations before it starts a rollout, so its checkpoint keeps the global RNG states
    of the previous rollout's end (the update in between draws nothing).
    """

    def __init__(self, monitor: Monitor, checkpoint: Any, done_before: int) -> None:
        super().__init__()
        self.monitor = monitor
        self.checkpoint = checkpoint
        self.done_before = done_before
        self.last = done_before
        self.rng_at_rollout_end: dict[str, Any] | None = None

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        if isinstance(self.model, ARS):
            from haq_gym.runs.checkpoint import global_rng_state  # haq_gym.runs imports the agents

            self.rng_at_rollout_end = global_rng_state()

    def _on_rollout_start(self) -> None:
        done = self.done_before + len(self.monitor.get_episode_rewards())
        if done > self.last and not self.monitor.rewards:
            self.last = done
            rng = self.rng_at_rollout_end if isinstance(self.model, ARS) else None
            self.checkpoint.episode_end(done, lambda folder: save_state(self.model, folder), rng)


AGENT_FILE = "agent.zip"
REPLAY_FILE = "replay_buffer.pkl"
SPACE_RNG_FILE = "action_space_rng.pt"


def save_state(model: BaseAlgorithm, folder: Path) -> None:
    """Write what :func:`load_state` needs to continue ``model`` exactly."""
    model.save(folder / AGENT_FILE)
    if isinstance(model, OffPolicyAlgorithm):
        model.save_replay_buffer(folder / REPLAY_FILE)
    torch.save(model.action_space.np_random.bit_generator.state, folder / SPACE_RNG_FILE)


def load_state(algo_class: type[BaseAlgorithm], folder: Path, vec_env: VecEnv, device: torch.device) -> BaseAlgorithm:
    """The model :func:`save_state` wrote, on ``vec_env``; its env is reset at the next ``learn``."""
    model = algo_class.load(folder / AGENT_FILE, env=vec_env, device=device)
    if isinstance(model, OffPolicyAlgorithm):
        model.load_replay_buffer(folder / REPLAY_FILE)
    model.action_space.np_random.bit_generator.state = torch.load(folder / SPACE_RNG_FILE, weights_only=True)
    model._last_obs = None  # the saved observation belongs to the old env; learn() resets the new one
    return model


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


def train_sb3(
    name: str,
    algo_class: type[BaseAlgorithm],
    env: gym.Env,
    episodes: int,
    seed: int,
    hyperparams: dict[str, Any],
    tensorboard_log: str | None = None,
    progress: bool = True,
    checkpoint: Any = None,
) -> BaseAlgorithm:
    """Train ``algo_class`` on ``env`` for exactly ``episodes`` episodes and return the model.

    With ``checkpoint`` (a :class:`~haq_gym.runs.checkpoint.SearchCheckpoint`) the model is
    checkpointed at episode boundaries (:class:`EpisodeCheckpoint`) and, when the checkpoint
    holds a state, continued from it for the episodes left.

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
    done = checkpoint.episodes if checkpoint is not None else 0
    if done:
        loaded: list[BaseAlgorithm] = []
        checkpoint.restore(lambda folder: loaded.append(load_state(algo_class, folder, vec_env, device)))
        model = loaded[0]
    else:
        model = algo_class(env=vec_env, seed=seed, verbose=0, device=device, **kwargs)
    # SB3's scalars go into the run's own TensorBoard folder (one run there, not an extra <algo>_1);
    # without a folder SB3 would create an empty SB3-<time> folder in the temp dir on every learn().
    model.set_logger(
        configure(tensorboard_log, ["tensorboard"])
        if tensorboard_log is not None
        else Logger(folder=None, output_formats=[])
    )
    budget = EpisodeBudget(monitor, episodes - done, progress, name)
    callback: BaseCallback = budget
    if checkpoint is not None:
        callback = CallbackList([budget, EpisodeCheckpoint(monitor, checkpoint, done)])
    try:
        model.learn(
            total_timesteps=learn_timesteps(model, episodes - done, length),
            callback=callback,
            reset_num_timesteps=not done,
        )
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

    def __call__(
        self,
        env: gym.Env,
        episodes: int,
        seed: int,
        hyperparams: dict[str, Any],
        run_dir: str | os.PathLike,
        progress: bool = True,
        writer: Any = None,
        checkpoint: Any = None,
    ) -> None:
        """Run the search; SB3's own scalars go to ``run_dir/tensorboard`` beside the run's when ``writer`` is given."""
        tensorboard_log = os.fspath(Path(run_dir) / "tensorboard") if writer is not None else None
        model = train_sb3(
            self.name,
            self.algo_class,
            env,
            episodes,
            seed,
            hyperparams,
            tensorboard_log,
            progress,
            checkpoint=checkpoint,
        )
        model.save(Path(run_dir) / AGENT_FILE)
