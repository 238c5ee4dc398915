"""HAQ-MobileNetV2-v0: registration, spaces, checkers, episodes, budgets, errors."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import haq_gym  # noqa: F401
from envs.linear_quantize_env import OBSERVATION_FEATURES, LinearQuantizeEnv
from haq_gym.search_setup import build_search_setup

ENV_ID = "HAQ-MobileNetV2-v0"


@pytest.fixture(scope="module")
def setup(tiny_env_kwargs):
    return build_search_setup(**tiny_env_kwargs)


def make(setup, **kw) -> LinearQuantizeEnv:
    return LinearQuantizeEnv(setup=setup, **kw)


def run_episode(env, actions) -> tuple[list, dict]:
    obs, _ = env.reset(seed=0)
    observations, done, i = [obs], False, 0
    while not done:
        obs, _reward, term, trunc, info = env.step(actions[i] if i < len(actions) else actions[-1])
        observations.append(obs)
        done, i = term or trunc, i + 1
    return observations, info


def test_gym_make_by_id_and_module_prefixed_id(tiny_env_kwargs) -> None:
    env = gym.make(ENV_ID, **tiny_env_kwargs)
    assert isinstance(env.unwrapped, LinearQuantizeEnv)
    assert env.observation_space.shape == (len(OBSERVATION_FEATURES),)
    code = (
        "import gymnasium as gym, sys; "
        "assert 'haq_gym' not in sys.modules; "
        "env = gym.make('haq_gym:HAQ-MobileNetV2-v0', **eval(sys.argv[1])); print(type(env.unwrapped).__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code, repr(tiny_env_kwargs)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("LinearQuantizeEnv")


@pytest.mark.parametrize("mode", ["continuous", "discrete"])
def test_gymnasium_and_sb3_checkers_pass(setup, mode: str) -> None:
    gym_check_env(make(setup, action_mode=mode), skip_render_check=True)
    sb3_check_env(make(setup, action_mode=mode), warn=False)


def test_episode_has_one_step_per_free_decision_and_final_info(setup) -> None:
    env = make(setup)
    assert len(env.decisions) == 51 * 2
    obs_list, info = run_episode(env, [np.array([1.0], dtype=np.float32)])
    assert len(obs_list) == 103
    for key in (
        "accuracy",
        "reference_accuracy",
        "latency_ratio",
        "flash_ratio",
        "bitops_ratio",
        "policy",
        "agent_policy",
        "budget_met",
        "eval_time_s",
        "cached",
        "reward",
    ):
        assert key in info
    assert info["agent_policy"][1:-1] == [[8, 8]] * 51  # action 1.0 -> max_bit everywhere
    assert info["policy"][0] == [8, -1] and info["policy"][-1] == [8, 8]
    assert info["budget_met"] and info["latency_ratio"] <= 0.5 + 1e-9
    assert info["reward"] == pytest.approx(0.1 * (info["accuracy"] - info["reference_accuracy"]))
    assert all(env.observation_space.contains(o) for o in obs_list)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.array([0.5], dtype=np.float32))


def test_observation_dynamic_features(setup) -> None:
    env = make(setup, latency_budget=0.6, flash_budget=0.7)
    obs, _ = env.reset(seed=0)
    idx = {name: i for i, name in enumerate(OBSERVATION_FEATURES)}
    assert obs[idx["previous_bits"]] == 1.0 and obs[idx["is_activation"]] == 0.0
    obs, *_ = env.step(np.array([0.0], dtype=np.float32))  # weight of layer 1 -> 2 bits
    assert obs[idx["is_activation"]] == 1.0 and obs[idx["previous_bits"]] == pytest.approx(2 / 8)
    slack_before = obs[idx["latency_slack"]]
    obs, *_ = env.step(np.array([1.0], dtype=np.float32))  # activation of layer 1 -> 8 bits
    assert obs[idx["is_activation"]] == 0.0 and obs[idx["previous_bits"]] == pytest.approx(1.0)
    assert obs[idx["latency_slack"]] < slack_before
    assert obs[idx["flash_spent"]] > 0


def test_action_mapping(setup) -> None:
    env = make(setup)
    assert [env.action_to_bits(np.array([a])) for a in (0.0, 0.07, 0.5, 0.93, 1.0)] == [2, 2, 5, 8, 8]
    with pytest.raises(ValueError, match="finite"):
        env.action_to_bits(np.array([np.nan]))
    disc = make(setup, action_mode="discrete", min_bit=3, max_bit=6)
    assert disc.action_space.n == 4 and disc.action_space.start == 0
    assert [disc.action_to_bits(k) for k in range(4)] == [3, 4, 5, 6]
    with pytest.raises(ValueError, match=r"0\.\.3"):
        disc.action_to_bits(4)


def test_identical_policies_are_evaluated_once_and_runs_repeat(setup) -> None:
    env = make(setup, latency_budget=None, flash_budget=0.6)
    actions = [np.array([a], dtype=np.float32) for a in np.random.default_rng(0).random(102)]
    _, first = run_episode(env, actions)
    _, second = run_episode(env, actions)
    assert second["cached"] and not first["cached"]
    assert first["policy"] == second["policy"] and first["reward"] == second["reward"]
    fresh = make(setup, latency_budget=None, flash_budget=0.6)
    setup.evaluator._cache.clear()
    _, third = run_episode(fresh, actions)
    assert third["accuracy"] == first["accuracy"] and not third["cached"]


def test_haq_wall_and_greedy_both_meet_two_budgets(setup) -> None:
    for enforcement in ("haq", "greedy"):
        env = make(setup, latency_budget=0.4, flash_budget=0.45, enforcement=enforcement)
        _, info = run_episode(env, [np.array([1.0], dtype=np.float32)])
        assert info["budget_met"] and info["latency_ratio"] <= 0.4 + 1e-9 and info["flash_ratio"] <= 0.45 + 1e-9


@pytest.mark.parametrize("reward", ["haq", "haq_flash", "releq", "autoq"])
def test_reward_strategies_give_finite_rewards(setup, reward: str) -> None:
    _, info = run_episode(make(setup, reward=reward), [np.array([0.6], dtype=np.float32)])
    assert np.isfinite(info["reward"])


def test_bad_input_is_rejected_clearly(setup, tiny_env_kwargs, tmp_path) -> None:
    with pytest.raises(ValueError, match=r"impossible.*ratio of 0\.\d+"):
        make(setup, latency_budget=0.01)
    with pytest.raises(ValueError, match="min_bit"):
        make(setup, min_bit=1)
    with pytest.raises(ValueError, match="continuous, discrete"):
        make(setup, action_mode="binary")
    with pytest.raises(ValueError, match="haq_flash"):
        make(setup, reward="nope")
    with pytest.raises(ValueError, match="greedy, haq"):
        make(setup, enforcement="nope")
    bad = tmp_path / "table.npy"
    np.save(bad, np.ones((10, 8, 8)))
    with pytest.raises(ValueError, match=r"\(10, 8, 8\); expected \(53, 8, 8\)"):
        gym.make(ENV_ID, **{**tiny_env_kwargs, "latency_table": str(bad)})
    with pytest.raises(ValueError, match="digits"):
        gym.make(ENV_ID, **{**tiny_env_kwargs, "dataset": "svhn"})
    with pytest.raises(FileNotFoundError, match="--data-root"):
        gym.make(ENV_ID, **{**tiny_env_kwargs, "dataset": "cifar10", "data_root": str(tmp_path)})


def test_policy_file_from_final_info(setup) -> None:
    env = make(setup)
    _, info = run_episode(env, [np.array([0.3], dtype=np.float32)])
    pf = env.policy_file(info, found_by={"algo": "test"})
    pf.check_layers(setup.layer_names, min_bit=2, max_bit=8)
    assert pf.bits == info["policy"] and pf.found_by["algo"] == "test"
    assert pf.costs["latency_ratio"] == pytest.approx(info["latency_ratio"])


@pytest.mark.parametrize("mode", ["continuous", "discrete"])
def test_bits_to_action_inverts_the_mapping(setup, mode: str) -> None:
    env = make(setup, action_mode=mode, min_bit=2, max_bit=6)
    assert [env.action_to_bits(env.bits_to_action(b)) for b in range(2, 7)] == [2, 3, 4, 5, 6]
    with pytest.raises(ValueError, match=r"2\.\.6"):
        env.bits_to_action(7)


def test_following_action_masks_needs_no_enforcement(setup) -> None:
    env = make(setup, action_mode="discrete", latency_budget=0.35, flash_budget=0.4)
    env.reset(seed=0)
    done, masks_seen = False, []
    while not done:
        mask = env.action_masks()
        assert mask[0]
        masks_seen.append(mask.all())
        _, _, done, _, info = env.step(int(np.flatnonzero(mask)[-1]))  # greedily take the most bits allowed
    assert not all(masks_seen)  # the budget did bind somewhere
    assert info["budget_met"] and info["policy"] == info["agent_policy"]
