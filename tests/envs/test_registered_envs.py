"""Every registered env id: listed, documented, passes Gymnasium's and SB3's checkers, runs an episode."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import haq_gym
from envs.kmeans_quantize_env import KMeansQuantizeEnv
from envs.linear_quantize_env import LinearQuantizeEnv
from haq_gym.models import build_model, save_checkpoint

TINY_WIDTH = {"mobilenetv2": 0.35, "mobilenetv3small": 0.5, "resnet20": 0.5, "resnet18": 1.0}
"""Small random-init models: resnet18 exists at width 1.0 only (still fast at 16 validation images)."""


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    out = {}
    for name, width in TINY_WIDTH.items():
        torch.manual_seed(0)
        path = tmp_path_factory.mktemp("ckpt") / f"{name}.pt"
        save_checkpoint(path, build_model(name, num_classes=10, width_mult=width), {"note": "random init for tests"})
        out[name] = str(path)
    return out


def small_kwargs(env_id: str, checkpoints: dict[str, str]) -> dict:
    entry_point, fixed = haq_gym.ENV_IDS[env_id]
    model = fixed["model"]
    kwargs = {"width_mult": TINY_WIDTH[model], "checkpoint": checkpoints[model], "val_size": 16, "progress": False}
    if entry_point.endswith("LinearQuantizeEnv"):
        kwargs["calibration_size"] = 8  # the k-means envs keep activations float and need no calibration batch
    return kwargs


@pytest.fixture(scope="module", params=sorted(haq_gym.ENV_IDS))
def made(request: pytest.FixtureRequest, tiny_checkpoints: dict[str, str]) -> tuple[str, gym.Env]:
    env_id = request.param
    return env_id, gym.make(env_id, **small_kwargs(env_id, tiny_checkpoints))


def test_registry_lists_every_id_and_docstrings_name_them(capsys: pytest.CaptureFixture) -> None:
    gym.pprint_registry()
    listed = capsys.readouterr().out
    for env_id, (entry_point, kwargs) in haq_gym.ENV_IDS.items():
        assert env_id in listed
        cls = KMeansQuantizeEnv if entry_point.endswith("KMeansQuantizeEnv") else LinearQuantizeEnv
        assert gym.spec(env_id).entry_point == entry_point and gym.spec(env_id).kwargs == kwargs
        assert env_id in cls.__doc__, f"{cls.__name__}'s docstring does not describe {env_id}"


def test_checkers_pass(made: tuple[str, gym.Env]) -> None:
    env_id, env = made
    base = env.unwrapped
    assert base.setup.model_name == haq_gym.ENV_IDS[env_id][1]["model"]
    gym_check_env(base, skip_render_check=True, skip_close_check=True)
    sb3_check_env(type(base)(setup=base.setup, action_mode="discrete"), warn=False)


def test_one_episode(made: tuple[str, gym.Env]) -> None:
    _env_id, env = made
    base = env.unwrapped
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    steps, done = 0, False
    while not done:
        obs, reward, done, truncated, info = env.step(np.array([rng.random()], dtype=np.float32))
        assert env.observation_space.contains(obs) and not truncated
        steps += 1
    assert steps == len(base.decisions)
    assert info["budget_met"] and np.isfinite(reward) and reward == info["reward"]
    assert reward == pytest.approx(0.1 * (info["accuracy"] - info["reference_accuracy"]))
    assert len(info["policy"]) == len(base.setup.layers)
    pf = base.policy_file(info, found_by={"algo": "test"})
    pf.check_layers(base.setup.layer_names, min_bit=base.min_bit, max_bit=8)
    if isinstance(base, KMeansQuantizeEnv):
        assert info["flash_ratio"] <= base.size_budget + 1e-9
        assert all(a == -1 and base.min_bit <= w <= base.max_bit for w, a in info["policy"])
    else:
        assert info["latency_ratio"] <= base.budget.latency + 1e-9
        assert info["policy"][0] == [8, -1] and info["policy"][-1] == [8, 8]


def test_v1_ids_measure_the_reward_after_a_short_lsq_finetune(tiny_checkpoints: dict[str, str]) -> None:
    v1 = gym.make("HAQ-ResNet20-v1", **small_kwargs("HAQ-ResNet20-v1", tiny_checkpoints)).unwrapped
    v0 = gym.make("HAQ-ResNet20-v0", **small_kwargs("HAQ-ResNet20-v0", tiny_checkpoints)).unwrapped
    assert (v1.setup.evaluator.finetune.steps, v1.setup.evaluator.finetune.lr) == (20, 0.01)
    assert v0.setup.evaluator.finetune.steps == 0
    assert {type(layer.weight_quantizer).__name__ for layer in v1.setup.layers} != {
        type(layer.weight_quantizer).__name__ for layer in v0.setup.layers
    }
    overridden = gym.make(
        "HAQ-ResNet20-v1", **small_kwargs("HAQ-ResNet20-v1", tiny_checkpoints), finetune_steps=0
    ).unwrapped
    assert overridden.setup.evaluator.finetune.steps == 0  # keywords still override the version's defaults
