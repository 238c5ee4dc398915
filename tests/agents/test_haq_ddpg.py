"""Tests of the HAQ DDPG agent on a tiny learnable toy env."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from scipy import stats

from agents import HAQDDPG, EpisodeResult, HAQDDPGConfig, train_haq_ddpg
from agents.haq_ddpg import update_baseline

TARGETS = np.array([0.9, 0.7, 0.8, 0.9, 0.7])
EPISODE_LENGTH = len(TARGETS)


class ToyEnv(gym.Env):
    """Five steps; the final reward is -sum_t (a_t - target_t)^2, intermediate rewards are 0.

    The observation (step fraction, previous action, constant 1) tells the agent which step
    it is at. The targets sit well above 0.5, so an untrained sigmoid actor (output ~0.5)
    scores poorly and learning shows up clearly within a few hundred gradient steps.
    """

    def __init__(self, low: float = 0.0, high: float = 1.0) -> None:
        self.observation_space = gym.spaces.Box(0.0, 1.0, (3,), np.float32)
        self.action_space = gym.spaces.Box(low, high, (1,), np.float32)
        self.t = 0
        self.prev = 0.0
        self.err = 0.0

    def _obs(self) -> np.ndarray:
        return np.array([self.t / EPISODE_LENGTH, self.prev, 1.0], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t, self.prev, self.err = 0, 0.0, 0.0
        return self._obs(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.err += float((action[0] - TARGETS[self.t]) ** 2)
        self.prev = float(action[0])
        self.t += 1
        done = self.t == EPISODE_LENGTH
        return self._obs(), (-self.err if done else 0.0), done, False, {"err": self.err, "t": self.t}


@pytest.fixture(autouse=True)
def single_torch_thread():
    """Tiny networks run fastest on one thread, and do not stall when the CPU is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_config(**overrides: float) -> HAQDDPGConfig:
    """A fast configuration for tests: small nets and a short warm-up."""
    values = {"hidden1": 32, "hidden2": 32, "batch_size": 16, "warmup": 3}
    values.update(overrides)
    return HAQDDPGConfig(**values)


def make_agent(config: HAQDDPGConfig, seed: int = 0, low: float = 0.0, high: float = 1.0) -> HAQDDPG:
    env = ToyEnv(low, high)
    return HAQDDPG(env.observation_space, env.action_space, config, seed)


def run(episodes: int, seed: int, config: HAQDDPGConfig, **kwargs) -> tuple[HAQDDPG, list[EpisodeResult]]:
    results: list[EpisodeResult] = []
    agent = train_haq_ddpg(ToyEnv(), episodes, seed, config, on_episode_end=results.append, progress=False, **kwargs)
    return agent, results


def fake_episode(reward_offset: float = 0.0) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, bool]]:
    """Five transitions with distinguishable observations and actions."""
    out = []
    for t in range(EPISODE_LENGTH):
        obs = np.array([t, reward_offset, 1.0], dtype=np.float32)
        nxt = np.array([t + 1, reward_offset, 1.0], dtype=np.float32)
        out.append((obs, np.array([0.1 * (t + 1)], dtype=np.float32), nxt, t == EPISODE_LENGTH - 1))
    return out


def test_warmup_actions_are_uniform_over_the_bounds_and_inclusive_of_episode_warmup() -> None:
    low, high = -2.0, 3.0
    agent = make_agent(small_config(warmup=3, init_delta=1e-3), low=low, high=high)
    obs = np.array([0.4, 0.2, 1.0], dtype=np.float32)

    warm = np.array([agent.act(obs, episode=ep % 4) for ep in range(3000)])[:, 0]
    assert warm.dtype == np.float32
    assert warm.min() >= low and warm.max() <= high
    assert stats.kstest(warm, stats.uniform(loc=low, scale=high - low).cdf).pvalue > 1e-3

    # Episode == warmup is still warm-up (HAQ's `episode <= warmup`): uniform, not near the actor.
    last_warm = np.array([agent.act(obs, episode=3) for _ in range(500)])[:, 0]
    assert stats.kstest(last_warm, stats.uniform(loc=low, scale=high - low).cdf).pvalue > 1e-3

    # First episode after warm-up: tiny delta, so actions hug the deterministic actor action.
    after = np.array([agent.act(obs, episode=4) for _ in range(200)])[:, 0]
    assert np.abs(after - agent.predict(obs)[0]).max() < 0.05


def test_delta_schedule_and_noise_spread_around_actor() -> None:
    agent = make_agent(small_config(warmup=20))
    for episode, expected in [(21, 0.495), (120, 0.5 * 0.99**100), (220, 0.5 * 0.99**200), (599, 0.5 * 0.99**579)]:
        assert agent.exploration_delta(episode) == pytest.approx(expected, rel=1e-12)
    assert agent.exploration_delta(120) == pytest.approx(0.18302, abs=1e-5)
    assert agent.exploration_delta(220) == pytest.approx(0.06699, abs=1e-5)

    obs = np.array([0.6, 0.3, 1.0], dtype=np.float32)
    mu = float(agent.predict(obs)[0])
    spreads = []
    for episode in (21, 120, 220):
        delta = agent.exploration_delta(episode)
        samples = np.array([agent.act(obs, episode)[0] for _ in range(2000)], dtype=np.float64)
        dist = stats.truncnorm((0 - mu) / delta, (1 - mu) / delta, loc=mu, scale=delta)
        assert samples.min() >= 0.0 and samples.max() <= 1.0
        assert samples.mean() == pytest.approx(dist.mean(), abs=0.025)
        assert samples.std() == pytest.approx(dist.std(), rel=0.08)
        spreads.append(samples.std())
    assert spreads[0] > spreads[1] > spreads[2]


def test_every_stored_transition_carries_the_final_reward() -> None:
    agent, results = run(8, seed=0, config=small_config(warmup=2))
    memory = agent.memory
    assert memory is not None
    assert memory.capacity == HAQDDPGConfig().rmsize * EPISODE_LENGTH
    assert len(memory) == 8 * EPISODE_LENGTH
    for r in results:
        rows = slice(r.episode * EPISODE_LENGTH, (r.episode + 1) * EPISODE_LENGTH)
        np.testing.assert_array_equal(memory.rewards[rows, 0], np.float32(r.reward))
        np.testing.assert_array_equal(memory.actions[rows], np.array(r.actions))
        np.testing.assert_array_equal(memory.terminated[rows, 0], [0, 0, 0, 0, 1])
        # explicit next_obs: each transition's s' is the next transition's s
        np.testing.assert_array_equal(memory.next_obs[rows][:-1], memory.obs[rows][1:])
    assert len({r.reward for r in results}) == len(results)


def test_replay_is_a_ring_of_rmsize_episodes_with_actions_on_the_unit_scale() -> None:
    agent = make_agent(small_config(rmsize=2, warmup=10), low=-1.0, high=3.0)
    for episode, reward in enumerate([-1.0, -2.0, -3.0]):
        assert agent.observe_episode(fake_episode(reward), reward, episode) == {}
    memory = agent.memory
    assert memory is not None and memory.capacity == 2 * EPISODE_LENGTH and len(memory) == 10
    # the third episode overwrote the first
    assert sorted(set(memory.rewards[:, 0].tolist())) == [-3.0, -2.0]
    # env actions 0.1..0.5 in [-1, 3] are stored as (a + 1) / 4
    expected = (np.array([0.1, 0.2, 0.3, 0.4, 0.5], dtype=np.float32) + 1.0) / 4.0
    np.testing.assert_allclose(memory.actions[:EPISODE_LENGTH, 0], expected, rtol=1e-6)


def test_baseline_update_rule_on_known_numbers() -> None:
    assert update_baseline(None, -2.0, 0.5) == -2.0
    assert update_baseline(-2.0, -1.0, 0.5) == -1.5
    assert update_baseline(-1.5, -3.0, 0.5) == -2.25
    assert update_baseline(1.0, 3.0, 0.25) == 1.5


def test_baseline_follows_interleaved_append_and_update() -> None:
    # batch == capacity == one episode, so each batch is the whole buffer and its mean is known.
    agent = make_agent(small_config(warmup=0, batch_size=5, rmsize=1))
    actor_before = {k: v.clone() for k, v in agent.actor.state_dict().items()}
    assert agent.observe_episode(fake_episode(), -1.0, episode=0) == {}  # warm-up: store only
    assert agent.baseline is None
    assert all(torch.equal(v, agent.actor.state_dict()[k]) for k, v in actor_before.items())

    out = agent.observe_episode(fake_episode(), -3.0, episode=1)
    # buffer means after each of the 5 appends: -1.4, -1.8, -2.2, -2.6, -3.0
    # B: -1.4 -> -1.6 -> -1.9 -> -2.25 -> -2.625
    assert agent.baseline == pytest.approx(-2.625, abs=1e-6)
    assert out["baseline"] == pytest.approx(-2.625, abs=1e-6)
    assert out["delta"] == pytest.approx(0.5 * 0.99)
    assert np.isfinite(out["critic_loss"]) and np.isfinite(out["actor_loss"])
    assert any(not torch.equal(v, agent.actor.state_dict()[k]) for k, v in actor_before.items())


def test_same_seed_is_bit_identical_and_leaves_global_rngs_alone() -> None:
    config = small_config(warmup=3)
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    agent_a, results_a = run(12, seed=7, config=config)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.random.get_state()[1].tolist() == np_state[1].tolist()

    agent_b, results_b = run(12, seed=7, config=config)
    agent_c, results_c = run(12, seed=8, config=config)
    actions_a = np.array([r.actions for r in results_a])
    np.testing.assert_array_equal(actions_a, np.array([r.actions for r in results_b]))
    state_a, state_b, state_c = (a.actor.state_dict() for a in (agent_a, agent_b, agent_c))
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)

    assert not np.array_equal(actions_a, np.array([r.actions for r in results_c]))
    assert not all(torch.equal(state_a[k], state_c[k]) for k in state_a)


def test_learns_the_toy_task() -> None:
    config = HAQDDPGConfig(hidden1=64, hidden2=64, warmup=5)
    _, results = run(150, seed=0, config=config)
    rewards = np.array([r.reward for r in results])
    warmup_mean = rewards[: config.warmup + 1].mean()
    final_mean = rewards[-20:].mean()
    # Uniform-random actions score about -1.04 on average; an untrained actor (output ~0.5)
    # plus the episode-150 exploration noise (delta ~= 0.12) scores about -0.68. A policy
    # that moved its actions towards the high targets does far better than both.
    assert final_mean > -0.3
    assert final_mean > warmup_mean + 0.4


def test_save_load_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = small_config(warmup=2)
    agent, _ = run(6, seed=1, config=config)
    path = tmp_path / "agent.pt"
    agent.save(path)

    calls = []
    real_load = torch.load

    def recording_load(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    restored = make_agent(config, seed=123)
    restored.load(path)
    assert calls and all(c.get("weights_only") is True for c in calls)

    observations = np.random.default_rng(0).uniform(0, 1, (10, 3)).astype(np.float32)
    for obs in observations:
        np.testing.assert_array_equal(restored.predict(obs), agent.predict(obs))
    assert restored.baseline == agent.baseline
    # RNG state and replay memory come back too, so the search resumes identically.
    np.testing.assert_array_equal([restored.act(o, 10) for o in observations], [agent.act(o, 10) for o in observations])
    assert restored.memory is not None and agent.memory is not None
    np.testing.assert_array_equal(restored.memory.rewards, agent.memory.rewards)
    assert (restored.memory.pos, len(restored.memory)) == (agent.memory.pos, len(agent.memory))
    out_a = agent.observe_episode(fake_episode(), -0.5, 11)
    out_b = restored.observe_episode(fake_episode(), -0.5, 11)
    assert out_a == out_b


def test_loop_reports_episodes_and_logs_agent_scalars() -> None:
    class Recorder:
        def __init__(self) -> None:
            self.scalars: list[tuple[str, float, int]] = []

        def add_scalar(self, tag: str, value: float, step: int) -> None:
            self.scalars.append((tag, value, step))

    writer = Recorder()
    _, results = run(8, seed=0, config=small_config(warmup=2), writer=writer)
    assert [r.episode for r in results] == list(range(8))
    for r in results:
        assert len(r.actions) == EPISODE_LENGTH
        assert r.info["t"] == EPISODE_LENGTH
        assert r.reward == pytest.approx(-r.info["err"])
    tags = {tag for tag, _, _ in writer.scalars}
    assert tags == {"agent/delta", "agent/critic_loss", "agent/actor_loss", "agent/baseline"}
    assert min(step for _, _, step in writer.scalars) == 3  # nothing logged during warm-up 0..2


@pytest.mark.parametrize(
    "obs_space, act_space, message",
    [
        (gym.spaces.Box(0, 1, (3,)), gym.spaces.Discrete(4), "Box action space"),
        (gym.spaces.Box(0, 1, (3,)), gym.spaces.Box(0, 1, (2, 2)), "1-D gymnasium.spaces.Box action"),
        (gym.spaces.Box(0, 1, (3,)), gym.spaces.Box(-np.inf, np.inf, (1,)), "bounded action Box"),
        (gym.spaces.Box(0, 1, (3,)), gym.spaces.Box(np.zeros(1, np.float32), np.zeros(1, np.float32)), "low < high"),
        (gym.spaces.Box(0, 1, (2, 3)), gym.spaces.Box(0, 1, (1,)), "1-D gymnasium.spaces.Box observation"),
        (gym.spaces.Discrete(3), gym.spaces.Box(0, 1, (1,)), "observation space"),
    ],
)
def test_bad_spaces_are_rejected(obs_space: gym.Space, act_space: gym.Space, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HAQDDPG(obs_space, act_space, HAQDDPGConfig(), seed=0)


def test_bad_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="delta_decay"):
        HAQDDPGConfig(delta_decay=0.0)
    with pytest.raises(ValueError, match="batch_size"):
        HAQDDPGConfig(batch_size=0)


def test_device_is_a_config_field_checked_early() -> None:
    with pytest.raises(ValueError, match=r"HAQDDPGConfig\.device: device must be cpu, cuda"):
        HAQDDPGConfig(device="tpu")
    agent, results = run(2, 0, small_config(device="auto", warmup=0))
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert len(results) == 2
    assert {p.device.type for p in agent.actor.parameters()} == {expected}


# Recorded with the code on main before the update was split for CUDA graphs (commit 376a078):
# run(8, seed=3, config=small_config(warmup=2)), one torch thread.
GOLDEN_STATS = [
    {"critic_loss": 0.149539626, "actor_loss": 0.0696751133, "baseline": -0.828462961},
    {"critic_loss": 0.15899204, "actor_loss": 0.0560780019, "baseline": -0.858656374},
    {"critic_loss": 0.115921493, "actor_loss": 0.0804944634, "baseline": -0.742966491},
    {"critic_loss": 0.111223523, "actor_loss": 0.0722336769, "baseline": -0.790047379},
    {"critic_loss": 0.0899143778, "actor_loss": 0.0676275283, "baseline": -0.766115774},
]
GOLDEN_REWARDS = [
    -1.34581448,
    -1.04786827,
    -0.528395397,
    -0.352882072,
    -1.07337963,
    -0.527032834,
    -0.778149897,
    -0.81713228,
]
GOLDEN_ACTOR_SUMS = {
    "fc1.weight": -5.70227882,
    "fc1.bias": -2.47288998,
    "fc2.weight": 1.67240888,
    "fc2.bias": 0.506053602,
    "fc3.weight": 0.652990266,
    "fc3.bias": 0.0873221233,
}


def test_same_seed_gives_the_updates_recorded_before_the_cuda_graph_split(monkeypatch) -> None:
    stats_seen: list[dict] = []
    observe = HAQDDPG.observe_episode

    def recording(self, *args, **kwargs):
        out = observe(self, *args, **kwargs)
        stats_seen.append(out)
        return out

    monkeypatch.setattr(HAQDDPG, "observe_episode", recording)
    agent, results = run(8, seed=3, config=small_config(warmup=2))
    assert stats_seen[:3] == [{}, {}, {}]
    for got, want in zip(stats_seen[3:], GOLDEN_STATS, strict=True):
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    assert [r.reward for r in results] == pytest.approx(GOLDEN_REWARDS, rel=1e-6)
    sums = {k: v.double().sum().item() for k, v in agent.actor.state_dict().items()}
    assert sums == pytest.approx(GOLDEN_ACTOR_SUMS, rel=1e-5, abs=1e-7)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_updates_match_the_plain_updates_on_cuda() -> None:
    config = small_config(warmup=0)
    agents = [
        HAQDDPG(
            ToyEnv().observation_space,
            ToyEnv().action_space,
            HAQDDPGConfig(**{**config.__dict__, "cuda_graph": graphed}),
            seed=0,
            device="cuda",
        )
        for graphed in (False, True)
    ]
    outs = [[a.observe_episode(fake_episode(0.1 * k), -0.5 * k, episode=k) for k in range(8)] for a in agents]
    assert agents[1]._graph_update is not None and agents[1]._graph_update.graph is not None
    for plain, graphed in zip(*outs, strict=True):
        assert plain.keys() == graphed.keys()
        for key in plain:
            assert graphed[key] == pytest.approx(plain[key], rel=1e-4, abs=1e-6), key
    for name, value in agents[0].actor.state_dict().items():
        torch.testing.assert_close(agents[1].actor.state_dict()[name], value, rtol=1e-4, atol=1e-6)
