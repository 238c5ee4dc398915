"""An SB3 model written by ``save_state`` comes back from ``load_state`` with everything its next update reads."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import torch
from sb3_contrib import ARS
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv

from agents.sb3.runner import load_state, save_state


def _vec_env() -> DummyVecEnv:
    return DummyVecEnv([lambda: gym.make("Pendulum-v1")])


def test_ars_weight_vector_is_the_saved_policy_not_a_fresh_one(tmp_path: Path) -> None:
    """ARS updates ``weights`` and copies them into the policy: a load must bring back the trained vector.

    (ARS's load rebuilds ``weights`` as zeros, but its policy parameters are views of that
    vector, so loading the saved policy fills it.)
    """
    model = ARS("LinearPolicy", _vec_env(), n_delta=1, seed=0)
    trained = torch.randn_like(model.weights, generator=torch.Generator().manual_seed(1))
    model.weights = trained
    model.policy.load_from_vector(trained.cpu())
    save_state(model, tmp_path)
    loaded = load_state(ARS, tmp_path, _vec_env(), torch.device("cpu"))
    assert isinstance(loaded, ARS)
    assert torch.equal(loaded.weights, trained)


def test_on_policy_model_keeps_its_optimiser_and_counters(tmp_path: Path) -> None:
    model = PPO("MlpPolicy", _vec_env(), n_steps=64, batch_size=32, n_epochs=1, seed=0)
    model.learn(128)
    save_state(model, tmp_path)
    loaded = load_state(PPO, tmp_path, _vec_env(), torch.device("cpu"))
    assert (loaded.num_timesteps, loaded._n_updates) == (model.num_timesteps, model._n_updates)
    saved, back = model.policy.optimizer.state_dict(), loaded.policy.optimizer.state_dict()
    assert back["state"] and back["state"].keys() == saved["state"].keys()
    for key, state in saved["state"].items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(back["state"][key][name]), torch.as_tensor(value)), (key, name)
    assert loaded.action_space.np_random.bit_generator.state == model.action_space.np_random.bit_generator.state
