"""SB3 / sb3-contrib agents end to end on the tiny problem: exact episode budgets, run folders, seeds, masks."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import yaml
from sb3_contrib import MaskablePPO
from stable_baselines3 import PPO, SAC
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents.sb3 import ALGORITHMS, EpisodeRewardReplayBuffer, check_hyperparams, train_sb3
from agents.sb3.runner import constructor_kwargs
from envs.linear_quantize_env import LinearQuantizeEnv
from haq_gym.policy import PolicyFile
from haq_gym.runs import RunRecorder
from haq_gym.search_setup import SearchSetup, build_search_setup

CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs"
EPISODES = 2  # each episode is a real policy evaluation (seconds on a busy CPU)
NET = {"net_arch": [8]}
OFF_POLICY = {
    "learning_starts": 102,
    "batch_size": 16,
    "buffer_size": 1000,
    "train_freq": [1, "episode"],
    "gradient_steps": 2,
    "policy_kwargs": NET,
}
# Tiny networks and updates; rollouts of 64 or 32 steps end mid-episode, so the exact stop is exercised.
TINY: dict[str, dict[str, Any]] = {
    "ddpg": {**OFF_POLICY, "action_noise": 0.3},
    "td3": {**OFF_POLICY, "action_noise": 0.3},
    "sac": OFF_POLICY,
    "tqc": {**OFF_POLICY, "policy_kwargs": {**NET, "n_quantiles": 5}},
    "dqn": OFF_POLICY,
    "ppo": {"n_steps": 64, "batch_size": 32, "n_epochs": 1, "policy_kwargs": NET},
    "a2c": {"n_steps": 32, "policy_kwargs": {**NET, "activation_fn": "Tanh"}},
    "trpo": {"n_steps": 64, "batch_size": 32, "n_critic_updates": 1, "cg_max_steps": 3, "policy_kwargs": NET},
    # 2 * n_delta * n_eval_episodes = 2 episodes per update.
    "ars": {"n_delta": 1, "n_eval_episodes": 1, "policy": "LinearPolicy"},
    "maskable-ppo": {"n_steps": 64, "batch_size": 32, "n_epochs": 1, "policy_kwargs": NET},
}


@pytest.fixture(scope="module")
def setup(tiny_env_kwargs: dict) -> SearchSetup:
    return build_search_setup(**tiny_env_kwargs)


class FinalInfos(gym.Wrapper):
    """Keeps every episode's final info and counts the action-mask requests that reach the env."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.finals: list[dict] = []
        self.masks: list[np.ndarray] = []

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if terminated:
            self.finals.append(info)
        return obs, reward, terminated, truncated, info

    def action_masks(self) -> np.ndarray:
        mask = self.env.unwrapped.action_masks()
        self.masks.append(mask)
        return mask


class Recorded(FinalInfos):
    """The env a runner drives, with a RunRecorder observing its policy problem (as ``run_search`` sets it up)."""

    def __init__(self, env: LinearQuantizeEnv, run_dir: Path, tensorboard: bool) -> None:
        super().__init__(env)
        self.recorder = RunRecorder(env.problem, run_dir, tensorboard=tensorboard)

    @property
    def episodes(self) -> int:
        return self.recorder.episodes

    @property
    def tensorboard_writer(self) -> Any:
        return self.recorder.tensorboard_writer

    def close(self) -> None:
        self.recorder.close()
        super().close()


def recorded(setup: SearchSetup, run_dir: Path, action_mode: str, tensorboard: bool = False) -> Recorded:
    return Recorded(LinearQuantizeEnv(setup=setup, action_mode=action_mode), run_dir, tensorboard)


def read_episodes(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "episodes.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def run_algo(
    name: str,
    setup: SearchSetup,
    run_dir: Path,
    action_mode: str,
    episodes: int = EPISODES,
    seed: int = 0,
    tensorboard: bool = False,
) -> Recorded:
    env = recorded(setup, run_dir, action_mode, tensorboard)
    try:
        ALGORITHMS[name].runner(
            env,
            episodes=episodes,
            seed=seed,
            hyperparams=TINY[name],
            run_dir=run_dir,
            progress=False,
            writer=env.tensorboard_writer,
        )
    finally:
        env.close()
    return env


@pytest.mark.parametrize("name", sorted(TINY))
def test_runs_exactly_the_episode_budget(name: str, setup: SearchSetup, tmp_path: Path) -> None:
    episodes = 3 if name == "ars" else EPISODES  # ars: one update of 2 episodes, then one with predict()
    env = run_algo(name, setup, tmp_path, ALGORITHMS[name].action_modes[0], episodes=episodes)
    assert env.episodes == episodes
    assert len(read_episodes(tmp_path)) == episodes
    assert PolicyFile.load(tmp_path / "best_policy.json").budget["budget_met"] is True
    assert (tmp_path / "agent.zip").is_file()


@pytest.mark.parametrize("name", ["ppo", "a2c", "trpo", "ars"])
def test_second_action_mode(name: str, setup: SearchSetup, tmp_path: Path) -> None:
    episodes = 2 if name == "ars" else 1  # one ars update; the others train mid-episode (n_steps < 102)
    env = run_algo(name, setup, tmp_path, ALGORITHMS[name].action_modes[1], episodes=episodes)
    assert env.episodes == episodes and len(read_episodes(tmp_path)) == episodes


def test_tensorboard_only_with_a_writer(setup: SearchSetup, tmp_path: Path) -> None:
    run_algo("a2c", setup, tmp_path, "discrete", episodes=1, tensorboard=True)
    folder = tmp_path / "tensorboard"
    assert not [p for p in folder.iterdir() if p.is_dir()]  # one run: SB3's scalars beside the recorder's
    tags = set()
    for events in folder.glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        tags.update(accumulator.Tags()["scalars"])
    assert {"episode/reward", "train/value_loss", "train/policy_loss"} <= tags


def test_same_seed_same_episode_policies(setup: SearchSetup, tmp_path: Path) -> None:
    policies = []
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        run_algo("ppo", setup, tmp_path / run, "discrete")
        policies.append([(row["w_bits"], row["a_bits"]) for row in read_episodes(tmp_path / run)])
    assert policies[0] == policies[1]
    assert len(set(policies[0])) == EPISODES  # a policy that learns and explores, not a constant one


def test_maskable_ppo_only_takes_allowed_actions(setup: SearchSetup, tmp_path: Path) -> None:
    env = run_algo("maskable-ppo", setup, tmp_path, "discrete")
    inner = env
    assert len(inner.masks) == EPISODES * 102  # the masks reach MaskablePPO through the wrappers and Monitor
    assert any(not mask.all() for mask in inner.masks)  # and they do forbid bit widths
    assert len(inner.finals) == EPISODES
    for info in inner.finals:
        assert info["agent_policy"] == info["policy"]  # the budget wall had nothing to fix


def test_episode_reward_relabel_end_to_end_with_sac(setup: SearchSetup, tmp_path: Path) -> None:
    env = recorded(setup, tmp_path, "continuous")
    model = train_sb3("sac", SAC, env, 3, 0, {**TINY["sac"], "episode_reward_relabel": True}, progress=False)
    env.close()
    assert env.episodes == 3
    buffer = model.replay_buffer
    assert isinstance(buffer, EpisodeRewardReplayBuffer)
    # Training stops on the last step, before it is stored: the first two episodes are in, relabelled.
    assert buffer.size() == 2 * 102
    rewards = [float(row["reward"]) for row in read_episodes(tmp_path)]
    np.testing.assert_allclose(buffer.rewards[:102, 0], rewards[0], atol=1e-6)
    np.testing.assert_allclose(buffer.rewards[102:204, 0], rewards[1], atol=1e-6)


def test_relabel_needs_a_whole_episode_before_learning(setup: SearchSetup, tmp_path: Path) -> None:
    env = recorded(setup, tmp_path, "continuous")
    with pytest.raises(ValueError, match="learning_starts must be >= 101"):
        train_sb3("sac", SAC, env, 1, 0, {"episode_reward_relabel": True, "learning_starts": 50}, progress=False)
    env.close()
    assert env.episodes == 0


def test_unknown_hyperparameter_lists_allowed_keys(setup: SearchSetup, tmp_path: Path) -> None:
    with pytest.raises(
        ValueError,
        match=r"ppo does not take hyperparameter\(s\) episode_reward_relabel, n_step; "
        r"it takes .*n_steps",
    ):
        check_hyperparams("ppo", PPO, {"n_step": 64, "episode_reward_relabel": True})
    env = recorded(setup, tmp_path, "discrete")
    with pytest.raises(ValueError, match=r"it takes .*policy_kwargs"):
        ALGORITHMS["maskable-ppo"].runner(env, 1, 0, {"use_sde": True}, tmp_path, progress=False)
    with pytest.raises(ValueError, match="activation_fn 'relu'"):
        train_sb3("maskable-ppo", MaskablePPO, env, 1, 0, {"policy_kwargs": {"activation_fn": "relu"}}, progress=False)
    env.close()
    assert env.episodes == 0


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_config_files_build_their_models(name: str, setup: SearchSetup) -> None:
    spec = ALGORITHMS[name]
    with open(CONFIG_DIR / f"{name}.yml") as fh:
        table = yaml.safe_load(fh)
    assert set(table) == {"default", "HAQ-MobileNetV2-v0"}
    assert table["HAQ-MobileNetV2-v0"]["n_episodes"] == 120
    for entry in table.values():
        hyperparams = {k: v for k, v in entry.items() if k != "n_episodes"}
        check_hyperparams(name, spec.runner.algo_class, hyperparams)
        env = LinearQuantizeEnv(setup=setup, action_mode=spec.action_modes[0])
        kwargs = constructor_kwargs(spec.runner.algo_class, hyperparams, env.action_space, len(env.decisions))
        model = spec.runner.algo_class(env=env, seed=0, device="cpu", **kwargs)
        if name == "ars":  # whole updates fill the budget: no episodes left for predict()
            assert entry["n_episodes"] % (2 * model.n_delta * model.n_eval_episodes) == 0


def test_device_is_a_hyperparameter_defaulting_to_the_cpu(setup: SearchSetup, tmp_path: Path) -> None:
    env = recorded(setup, tmp_path, "continuous")
    try:
        model = train_sb3("ddpg", ALGORITHMS["ddpg"].runner.algo_class, env, 1, 0, dict(TINY["ddpg"]), progress=False)
        assert model.device.type == "cpu"
        with pytest.raises(ValueError, match="ddpg hyperparameter device: device must be cpu, cuda"):
            train_sb3(
                "ddpg",
                ALGORITHMS["ddpg"].runner.algo_class,
                env,
                1,
                0,
                {**TINY["ddpg"], "device": "tpu"},
                progress=False,
            )
    finally:
        env.close()
    assert "device" in ALGORITHMS["sac"].hyperparams
