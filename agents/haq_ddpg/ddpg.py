"""HAQ's DDPG agent and search loop, re-implemented as one readable file.

This ports the agent of HAQ (Wang et al., CVPR 2019; lib/rl/ddpg.py, lib/rl/memory.py and the
loop in rl_quantize.py) so that it runs against any Gymnasium env with a bounded 1-D ``Box``
action space. The algorithm is kept as HAQ ships it, including its unusual choices:

* every transition of an episode is stored with the episode's *final* reward (the env pays
  0 on intermediate steps), and the discount defaults to 1;
* the critic target subtracts a moving-average reward baseline ``B`` that is updated at every
  gradient step: ``B <- B + alpha * (mean(r_batch) - B)`` (the first step sets ``B`` to the
  batch mean);
* warm-up covers episodes ``0..warmup`` *inclusive* (HAQ tests ``episode <= warmup``), i.e.
  ``warmup + 1`` episodes of uniform-random actions; gradient steps start at episode
  ``warmup + 1``;
* after warm-up, actions are drawn from a normal distribution truncated to ``[0, 1]`` around
  the actor output, with ``sigma = init_delta * delta_decay ** (episode - warmup)``;
* learning happens only at the end of an episode: each transition is appended to the replay
  memory and followed by ``n_update`` gradient steps before the next one is appended.

Only real bugs are fixed: ``np.float`` (removed from NumPy) is gone; all randomness (network
init, exploration noise, replay sampling) comes from ``seed`` through a private
``numpy.random.Generator`` and a forked torch RNG, instead of the unseeded Python ``random``
module and a global NumPy state that HAQ's data loader reseeds. The caller's global RNGs are
never touched.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import truncnorm
from torch import nn
from tqdm import tqdm

from haq_gym.integrity import load_verified, seal
from haq_gym.runtime import torch_device

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

    from haq_gym.runs.checkpoint import SearchCheckpoint

AGENT_FILE = "agent.pt"


REPLAY_UNITS = ("episode", "layer")


def replay_capacity(config: HAQDDPGConfig, episode_length: int, n_layers: int | None) -> int:
    """Transitions the replay memory holds: ``rmsize`` episodes, or HAQ's ``rmsize x n_layers`` entries."""
    if config.replay_unit == "episode":
        return config.rmsize * episode_length
    if n_layers is None:
        raise ValueError("replay_unit='layer' (HAQ's replay size) needs an env that reports n_layers")
    return config.rmsize * n_layers


@dataclass
class HAQDDPGConfig:
    """Hyper-parameters of the agent; the defaults are HAQ's command-line defaults."""

    hidden1: int = 300
    hidden2: int = 300
    lr_actor: float = 1e-4
    lr_critic: float = 1e-3
    batch_size: int = 64
    tau: float = 0.01
    discount: float = 1.0
    # Episodes 0..warmup inclusive (warmup + 1 episodes) use uniform-random actions, as in HAQ.
    warmup: int = 20
    init_delta: float = 0.5
    delta_decay: float = 0.99
    # Replay capacity: rmsize * (length of the first observed episode) transitions with replay_unit="episode"
    # (rmsize episodes); rmsize * (the env's n_layers) with "layer", HAQ's own sizing (about 63 episodes of
    # MobileNetV2's linear flow, whose 106 decisions plus a dummy entry fill 107 entries each).
    rmsize: int = 128
    replay_unit: str = "episode"
    baseline_alpha: float = 0.5
    n_update: int = 1
    # Where the actor and critic train: cpu (default: bit-for-bit repeatable runs), cuda, cuda:N or
    # auto. The env's own device is train_agent.py's --device (docs/performance.md has timings).
    device: str = "cpu"
    # On CUDA, replay one gradient step captured in a CUDA graph instead of launching its ~60
    # small kernels one by one (the same arithmetic; ignored on the CPU). false = the plain path.
    cuda_graph: bool = True

    def __post_init__(self) -> None:
        """Reject values that would make the algorithm meaningless or crash later."""
        positive_ints = ("hidden1", "hidden2", "batch_size", "rmsize")
        for name in positive_ints:
            if getattr(self, name) < 1:
                raise ValueError(f"HAQDDPGConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.replay_unit not in REPLAY_UNITS:
            raise ValueError(
                f"HAQDDPGConfig.replay_unit must be one of {', '.join(REPLAY_UNITS)}, got {self.replay_unit!r}"
            )
        if self.warmup < 0 or self.n_update < 0:
            raise ValueError("HAQDDPGConfig.warmup and n_update must be >= 0")
        if self.init_delta <= 0 or not 0 < self.delta_decay <= 1:
            raise ValueError("HAQDDPGConfig needs init_delta > 0 and 0 < delta_decay <= 1")
        if not 0 < self.tau <= 1 or not 0 < self.baseline_alpha <= 1:
            raise ValueError("HAQDDPGConfig needs 0 < tau <= 1 and 0 < baseline_alpha <= 1")
        if not isinstance(self.cuda_graph, bool):
            raise ValueError(f"HAQDDPGConfig.cuda_graph must be true or false, got {self.cuda_graph!r}")
        try:
            torch_device(str(self.device))
        except ValueError as err:
            raise ValueError(f"HAQDDPGConfig.device: {err}") from None


def update_baseline(baseline: float | None, batch_mean: float, alpha: float) -> float:
    """HAQ's moving-average reward baseline: the first call returns the batch mean."""
    if baseline is None:
        return batch_mean
    return baseline + alpha * (batch_mean - baseline)


class ReplayBuffer:
    """Ring buffer of ``(obs, action, reward, next_obs, terminated)`` transitions.

    Deliberate simplification of HAQ's keras-rl ``SequentialMemory``: the next observation is
    stored explicitly, so HAQ's dummy entry appended after each episode (to give the last
    transition an ``s'``) and the redrawing of samples that straddle two episodes are not
    needed. Actions are stored on the actor's ``[0, 1]`` scale.

    Sampling is uniform and without replacement (keras-rl also samples without replacement
    when it can, and falls back to sampling with replacement otherwise); it requires at least
    ``batch_size`` stored transitions, and the agent skips gradient steps until then.
    """

    def __init__(self, capacity: int, obs_dim: int, action_dim: int) -> None:
        self.capacity = capacity
        self.obs = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.actions = np.zeros((capacity, action_dim), dtype=np.float32)
        self.rewards = np.zeros((capacity, 1), dtype=np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.terminated = np.zeros((capacity, 1), dtype=np.float32)
        self.pos = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def append(
        self, obs: np.ndarray, action: np.ndarray, reward: float, next_obs: np.ndarray, terminated: bool
    ) -> None:
        """Store one transition, overwriting the oldest once the buffer is full."""
        i = self.pos
        self.obs[i] = obs
        self.actions[i] = action
        self.rewards[i] = reward
        self.next_obs[i] = next_obs
        self.terminated[i] = float(terminated)
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Draw ``batch_size`` distinct transitions uniformly at random."""
        if self.size < batch_size:
            raise ValueError(f"cannot sample {batch_size} transitions from a buffer holding {self.size}")
        idx = rng.choice(self.size, size=batch_size, replace=False)
        return {
            "obs": self.obs[idx],
            "actions": self.actions[idx],
            "rewards": self.rewards[idx],
            "next_obs": self.next_obs[idx],
            "terminated": self.terminated[idx],
        }

    def state_dict(self) -> dict[str, Any]:
        """Contents as tensors and ints, for ``torch.save(..., weights_only=True)`` files."""
        return {
            "obs": torch.from_numpy(self.obs[: self.size].copy()),
            "actions": torch.from_numpy(self.actions[: self.size].copy()),
            "rewards": torch.from_numpy(self.rewards[: self.size].copy()),
            "next_obs": torch.from_numpy(self.next_obs[: self.size].copy()),
            "terminated": torch.from_numpy(self.terminated[: self.size].copy()),
            "capacity": self.capacity,
            "pos": self.pos,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> ReplayBuffer:
        """Rebuild a buffer saved by :meth:`state_dict`."""
        arrays = {k: state[k].cpu().numpy() for k in ("obs", "actions", "rewards", "next_obs", "terminated")}
        size, obs_dim = arrays["obs"].shape
        buffer = cls(int(state["capacity"]), obs_dim, arrays["actions"].shape[1])
        buffer.obs[:size] = arrays["obs"]
        buffer.actions[:size] = arrays["actions"]
        buffer.rewards[:size] = arrays["rewards"]
        buffer.next_obs[:size] = arrays["next_obs"]
        buffer.terminated[:size] = arrays["terminated"]
        buffer.size = size
        buffer.pos = int(state["pos"])
        return buffer


BATCH_FIELDS = ("obs", "actions", "rewards", "next_obs", "terminated")


class GraphedUpdate:
    """:meth:`HAQDDPG._learn` captured in a CUDA graph and replayed: one launch instead of ~60 per step.

    The batch is still sampled on the CPU by the agent's generator (the same draws as the
    plain path); it is packed into one pinned host buffer and copied to static device
    buffers, with the baseline, before each replay. A ring of pinned buffers lets the
    copies run ahead without overwriting one still in flight. The first ``WARMUP``
    steps run eagerly on a side stream (cuBLAS and the optimisers initialise lazily),
    the next is captured. Losses come back as device tensors, read once per episode.
    """

    WARMUP = 3
    RING = 8

    def __init__(self, agent: HAQDDPG) -> None:
        self.agent = agent
        b, o, a = agent.config.batch_size, agent.obs_dim, agent.action_dim
        self.widths = {"obs": o, "actions": a, "rewards": 1, "next_obs": o, "terminated": 1}
        size = b * sum(self.widths.values()) + 1  # + the baseline
        self.device_buffer = torch.empty(size, device=agent.device)
        self.host = [torch.empty(size, pin_memory=True) for _ in range(self.RING)]
        self.copied = [torch.cuda.Event() for _ in range(self.RING)]
        self.inputs: dict[str, torch.Tensor] = {}
        start = 0
        for k in BATCH_FIELDS:
            n = b * self.widths[k]
            self.inputs[k] = self.device_buffer[start : start + n].view(b, self.widths[k])
            start += n
        self.baseline = self.device_buffer[start]
        self.steps = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.outputs: tuple[torch.Tensor, torch.Tensor] = ()

    def _stage(self, batch: dict[str, np.ndarray], baseline: float) -> None:
        slot = self.steps % self.RING
        self.copied[slot].synchronize()  # the copy that last read this pinned buffer is done
        host = self.host[slot].numpy()
        start = 0
        for k in BATCH_FIELDS:
            n = batch[k].size
            host[start : start + n] = batch[k].reshape(-1)
            start += n
        host[start] = baseline
        self.device_buffer.copy_(self.host[slot], non_blocking=True)
        self.copied[slot].record()

    def __call__(self, batch: dict[str, np.ndarray], baseline: float) -> tuple[torch.Tensor, torch.Tensor]:
        self._stage(batch, baseline)
        self.steps += 1
        learn = self.agent._learn
        args = [self.inputs[k] for k in BATCH_FIELDS] + [self.baseline]
        if self.graph is None and self.steps <= self.WARMUP:
            current = torch.cuda.current_stream(self.agent.device)
            side = torch.cuda.Stream(self.agent.device)
            side.wait_stream(current)
            with torch.cuda.stream(side):
                critic, actor = learn(*args)
                out = critic.clone(), actor.clone()
            current.wait_stream(side)
            return out
        if self.graph is None:
            try:
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    self.outputs = learn(*args)
                self.graph = graph
            except Exception as err:  # noqa: BLE001 - any capture failure means: run plainly
                warnings.warn(
                    f"HAQ-DDPG: CUDA graph capture of the update failed ({type(err).__name__}: "
                    f"{str(err).strip().splitlines()[0] if str(err).strip() else ''}); using the plain path",
                    RuntimeWarning,
                    stacklevel=2,
                )
                self.agent._graphed = False
                torch.cuda.synchronize(self.agent.device)
                critic, actor = learn(*args)
                return critic.clone(), actor.clone()
        self.graph.replay()
        return self.outputs[0].clone(), self.outputs[1].clone()


class Actor(nn.Module):
    """``s -> FC -> ReLU -> FC -> ReLU -> FC -> sigmoid``: an action in ``[0, 1]^d``."""

    def __init__(self, obs_dim: int, action_dim: int, hidden1: int, hidden2: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(obs_dim, hidden1)
        self.fc2 = nn.Linear(hidden1, hidden2)
        self.fc3 = nn.Linear(hidden2, action_dim)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fc1(obs))
        x = F.relu(self.fc2(x))
        return torch.sigmoid(self.fc3(x))


class Critic(nn.Module):
    """``ReLU(W1 s + W2 a) -> FC -> ReLU -> FC(1)``: the action enters at the first layer."""

    def __init__(self, obs_dim: int, action_dim: int, hidden1: int, hidden2: int) -> None:
        super().__init__()
        self.fc11 = nn.Linear(obs_dim, hidden1)
        self.fc12 = nn.Linear(action_dim, hidden1)
        self.fc2 = nn.Linear(hidden1, hidden2)
        self.fc3 = nn.Linear(hidden2, 1)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fc11(obs) + self.fc12(action))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging: ``target <- (1 - tau) * target + tau * source``."""
    with torch.no_grad():
        torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)


def _check_spaces(observation_space: gym.Space, action_space: gym.Space) -> None:
    """Raise a ValueError unless the spaces are a 1-D Box and a bounded 1-D Box."""
    if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) != 1:
        raise ValueError(
            "HAQDDPG expects a 1-D gymnasium.spaces.Box observation space (a flat feature vector), "
            f"got {observation_space!r}"
        )
    if not isinstance(action_space, gym.spaces.Box) or len(action_space.shape) != 1:
        raise ValueError(f"HAQDDPG expects a 1-D gymnasium.spaces.Box action space, got {action_space!r}")
    low, high = action_space.low, action_space.high
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(high > low)):
        raise ValueError(
            "HAQDDPG expects a bounded action Box with finite low < high in every dimension "
            f"(the sigmoid actor output [0, 1] is mapped onto [low, high]), got low={low}, high={high}"
        )


class HAQDDPG:
    """HAQ's DDPG agent: sigmoid actor, baseline-corrected critic, truncated-normal exploration."""

    def __init__(
        self,
        observation_space: gym.spaces.Box,
        action_space: gym.spaces.Box,
        config: HAQDDPGConfig,
        seed: int,
        device: str | torch.device = "cpu",
        n_layers: int | None = None,
    ) -> None:
        _check_spaces(observation_space, action_space)
        self.n_layers = n_layers
        self.config = config
        self.device = torch.device(device)
        self.obs_dim = int(observation_space.shape[0])
        self.action_dim = int(action_space.shape[0])
        self.action_dtype = action_space.dtype
        self.low = action_space.low.astype(np.float64)
        self.high = action_space.high.astype(np.float64)
        self.rng = np.random.default_rng(seed)

        # Networks are built on CPU under a forked, seeded torch RNG: deterministic for a seed,
        # independent of the device, and the caller's global torch RNG is left as it was.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            actor = Actor(self.obs_dim, self.action_dim, config.hidden1, config.hidden2)
            critic = Critic(self.obs_dim, self.action_dim, config.hidden1, config.hidden2)
        self.actor = actor.to(self.device)
        self.critic = critic.to(self.device)
        self.actor_target = copy.deepcopy(self.actor)
        self.critic_target = copy.deepcopy(self.critic)
        # A captured optimiser step must keep its step counter on the device (``capturable``).
        self._graphed = bool(config.cuda_graph) and self.device.type == "cuda"
        self.actor_optim = torch.optim.Adam(self.actor.parameters(), lr=config.lr_actor, capturable=self._graphed)
        self.critic_optim = torch.optim.Adam(self.critic.parameters(), lr=config.lr_critic, capturable=self._graphed)

        self.baseline: float | None = None
        self.memory: ReplayBuffer | None = None
        self._graph_update: GraphedUpdate | None = None

    def _to_env(self, unit_action: np.ndarray) -> np.ndarray:
        """Map an action on the actor's ``[0, 1]`` scale onto ``[low, high]``."""
        action = np.clip(self.low + (self.high - self.low) * unit_action, self.low, self.high)
        return action.astype(self.action_dtype)

    def _to_unit(self, action: np.ndarray) -> np.ndarray:
        """Map an env action back onto the actor's ``[0, 1]`` scale (for storage)."""
        unit = (np.asarray(action, dtype=np.float64) - self.low) / (self.high - self.low)
        return np.clip(unit, 0.0, 1.0)

    def _actor_unit(self, obs: np.ndarray) -> np.ndarray:
        """Deterministic actor output on the ``[0, 1]`` scale, as float64."""
        x = torch.as_tensor(np.asarray(obs, dtype=np.float32).reshape(1, -1), device=self.device)
        with torch.no_grad():
            out = self.actor(x)
        return out.squeeze(0).cpu().numpy().astype(np.float64)

    def exploration_delta(self, episode: int) -> float:
        """Std of the truncated-normal noise at ``episode``: ``init_delta * decay**(episode - warmup)``."""
        cfg = self.config
        return cfg.init_delta * cfg.delta_decay ** (episode - cfg.warmup)

    def act(self, obs: np.ndarray, episode: int) -> np.ndarray:
        """Exploration action: uniform during warm-up, truncated normal around the actor after."""
        if episode <= self.config.warmup:
            unit = self.rng.uniform(0.0, 1.0, size=self.action_dim)
        else:
            mu = self._actor_unit(obs)
            delta = self.exploration_delta(episode)
            unit = truncnorm.rvs(
                (0.0 - mu) / delta,
                (1.0 - mu) / delta,
                loc=mu,
                scale=delta,
                size=self.action_dim,
                random_state=self.rng,
            )
            unit = np.clip(unit, 0.0, 1.0)
        return self._to_env(unit)

    def predict(self, obs: np.ndarray) -> np.ndarray:
        """Deterministic actor action (no noise), in action-space units."""
        return self._to_env(self._actor_unit(obs))

    def _learn(
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        rewards: torch.Tensor,
        next_obs: torch.Tensor,
        terminated: torch.Tensor,
        baseline: float | torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One DDPG gradient step on a batch; returns the (critic, actor) losses as 0-d tensors."""
        cfg = self.config
        with torch.no_grad():
            next_q = self.critic_target(next_obs, self.actor_target(next_obs))
            target_q = (rewards - baseline) + cfg.discount * (1.0 - terminated) * next_q
        critic_loss = F.mse_loss(self.critic(obs, actions), target_q)
        self.critic_optim.zero_grad()
        critic_loss.backward()
        self.critic_optim.step()

        actor_loss = -self.critic(obs, self.actor(obs)).mean()
        self.actor_optim.zero_grad()
        actor_loss.backward()
        self.actor_optim.step()

        soft_update(self.actor_target, self.actor, cfg.tau)
        soft_update(self.critic_target, self.critic, cfg.tau)
        return critic_loss.detach(), actor_loss.detach()

    def _update(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One DDPG gradient step on a sampled batch; returns (critic loss, actor loss), not yet read back."""
        assert self.memory is not None
        cfg = self.config
        batch = self.memory.sample(cfg.batch_size, self.rng)
        self.baseline = update_baseline(
            self.baseline, float(np.mean(batch["rewards"], dtype=np.float64)), cfg.baseline_alpha
        )
        if self._graphed:
            if self._graph_update is None:
                self._graph_update = GraphedUpdate(self)
            return self._graph_update(batch, self.baseline)
        obs, actions, rewards, next_obs, terminated = (
            torch.as_tensor(batch[k], device=self.device) for k in BATCH_FIELDS
        )
        return self._learn(obs, actions, rewards, next_obs, terminated, self.baseline)

    def observe_episode(
        self,
        transitions: list[tuple[np.ndarray, np.ndarray, np.ndarray, bool]],
        final_reward: float,
        episode: int,
    ) -> dict[str, float]:
        """Store an episode's ``(obs, action, next_obs, terminated)`` with its final reward, then learn.

        As in HAQ, each transition is appended and, after warm-up, followed by ``n_update``
        gradient steps (skipped while the buffer holds fewer than ``batch_size`` transitions).
        The replay capacity is fixed from the first episode's length (:func:`replay_capacity`). Returns an empty dict
        during warm-up, else ``delta`` and, if any step ran, the mean ``critic_loss`` and
        ``actor_loss`` and the current ``baseline``.
        """
        if not transitions:
            raise ValueError("observe_episode needs at least one transition")
        cfg = self.config
        if self.memory is None:
            capacity = replay_capacity(cfg, len(transitions), self.n_layers)
            self.memory = ReplayBuffer(capacity, self.obs_dim, self.action_dim)

        learn = episode > cfg.warmup
        losses: list[tuple[torch.Tensor, torch.Tensor]] = []
        for obs, action, next_obs, terminated in transitions:
            self.memory.append(obs, self._to_unit(action), final_reward, next_obs, terminated)
            if not learn:
                continue
            for _ in range(cfg.n_update):
                if len(self.memory) >= cfg.batch_size:
                    losses.append(self._update())
        # Read the losses back once per episode, not once per step (each read waits for the device).
        critic_losses = torch.stack([c for c, _ in losses]).tolist() if losses else []
        actor_losses = torch.stack([a for _, a in losses]).tolist() if losses else []

        if not learn:
            return {}
        stats = {"delta": self.exploration_delta(episode)}
        if critic_losses:
            assert self.baseline is not None
            stats["critic_loss"] = float(np.mean(critic_losses))
            stats["actor_loss"] = float(np.mean(actor_losses))
            stats["baseline"] = self.baseline
        return stats

    def save(self, path: str | os.PathLike) -> None:
        """Write networks, targets, optimisers, baseline, RNG state and replay memory to one file."""
        torch.save(
            seal(
                {
                    "actor": self.actor.state_dict(),
                    "critic": self.critic.state_dict(),
                    "actor_target": self.actor_target.state_dict(),
                    "critic_target": self.critic_target.state_dict(),
                    "actor_optim": self.actor_optim.state_dict(),
                    "critic_optim": self.critic_optim.state_dict(),
                    "baseline": self.baseline,
                    "rng": self.rng.bit_generator.state,
                    "memory": None if self.memory is None else self.memory.state_dict(),
                }
            ),
            path,
        )

    def load(self, path: str | os.PathLike) -> None:
        """Restore the state written by :meth:`save` (read with ``weights_only=True``, checksum verified)."""
        state = load_verified(path, map_location=self.device)
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.actor_target.load_state_dict(state["actor_target"])
        self.critic_target.load_state_dict(state["critic_target"])
        self.actor_optim.load_state_dict(state["actor_optim"])
        self.critic_optim.load_state_dict(state["critic_optim"])
        self.baseline = state["baseline"]
        self._graph_update = None  # the optimisers' state tensors were replaced: capture again
        self.rng.bit_generator.state = state["rng"]
        memory = state["memory"]
        self.memory = None if memory is None else ReplayBuffer.from_state_dict(memory)


@dataclass
class EpisodeResult:
    """What one search episode produced, handed to ``on_episode_end``."""

    episode: int
    reward: float
    info: dict
    actions: list


def train_haq_ddpg(
    env: gym.Env,
    episodes: int,
    seed: int,
    config: HAQDDPGConfig | None = None,
    on_episode_end: Callable[[EpisodeResult], None] | None = None,
    progress: bool = True,
    writer: SummaryWriter | None = None,
    checkpoint: SearchCheckpoint | None = None,
) -> HAQDDPG:
    """Run HAQ's search loop for ``episodes`` episodes and return the trained agent.

    The env is seeded once (``reset(seed=seed)`` on episode 0). An episode's reward is the
    reward of its last step (HAQ's envs pay 0 before that). Agent statistics go to ``writer``
    as ``agent/<name>`` scalars indexed by episode. With ``checkpoint``, the agent
    (:meth:`HAQDDPG.save`: networks, optimisers, baseline, RNG, replay memory) is saved at
    episode ends as it asks, and a checkpoint it holds is loaded first and its episodes skipped.
    """
    if episodes < 0:
        raise ValueError(f"episodes must be >= 0, got {episodes}")
    config = config or HAQDDPGConfig()
    n_layers = getattr(env.unwrapped, "n_layers", None)
    if config.replay_unit == "layer" and n_layers is None:
        raise ValueError("replay_unit='layer' (HAQ's replay size) needs an env that reports n_layers")
    agent = HAQDDPG(
        env.observation_space,
        env.action_space,
        config,
        seed,
        device=torch_device(str(config.device)),
        n_layers=n_layers,
    )
    start = 0
    if checkpoint is not None and checkpoint.episodes:
        checkpoint.restore(lambda folder: agent.load(folder / AGENT_FILE))
        start = checkpoint.episodes
    best = -np.inf
    bar = tqdm(range(start, episodes), initial=start, total=episodes, disable=not progress, desc="haq-ddpg")
    for episode in bar:
        obs, info = env.reset(seed=seed if episode == 0 else None)
        obs = np.array(obs, dtype=np.float32)
        transitions: list[tuple[np.ndarray, np.ndarray, np.ndarray, bool]] = []
        actions: list[np.ndarray] = []
        done = False
        reward = 0.0
        while not done:
            action = agent.act(obs, episode)
            next_obs, reward, terminated, truncated, info = env.step(action)
            next_obs = np.array(next_obs, dtype=np.float32)
            transitions.append((obs, action, next_obs, bool(terminated)))
            actions.append(action)
            obs = next_obs
            done = terminated or truncated

        final_reward = float(reward)
        stats = agent.observe_episode(transitions, final_reward, episode)
        best = max(best, final_reward)
        if on_episode_end is not None:
            on_episode_end(EpisodeResult(episode=episode, reward=final_reward, info=info, actions=actions))
        if writer is not None:
            for name, value in stats.items():
                writer.add_scalar(f"agent/{name}", value, episode)
        bar.set_postfix(reward=f"{final_reward:.4f}", best=f"{best:.4f}")
        if checkpoint is not None:
            checkpoint.episode_end(episode + 1, lambda folder: agent.save(folder / AGENT_FILE))
    bar.close()
    return agent
