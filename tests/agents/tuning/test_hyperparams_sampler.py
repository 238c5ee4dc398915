"""Search spaces: one per tunable algorithm, producing keys and values the agents accept."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import optuna
import pytest

import train_agent
from agents.haq_ddpg import HAQDDPGConfig
from agents.registry import algo_names, check_hyperparams, get_spec
from agents.sb3 import ALGORITHMS as SB3_ALGORITHMS
from agents.sb3.runner import constructor_kwargs
from agents.tuning.hyperparams_sampler import (
    HYPERPARAMS_SAMPLER,
    NOTHING_TO_TUNE,
    FixedParams,
    SearchProblem,
    get_hyperparams_sampler,
)

PROBLEM = SearchProblem(episodes=120, episode_length=102, min_bit=2, max_bit=8)


class ShapeOnlyEnv(gym.Env):
    """The spaces of a haq-gym env, for constructing SB3 models (never stepped)."""

    def __init__(self, action_mode: str) -> None:
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(14,), dtype=np.float32)
        self.action_space = (
            gym.spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32)
            if action_mode == "continuous"
            else gym.spaces.Discrete(7)
        )


def sampled(algo: str, seed: int, fixed: dict | None = None) -> tuple[dict, optuna.trial.Trial]:
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed))
    trial = study.ask()
    return get_hyperparams_sampler(algo)(FixedParams(trial, fixed or {}), PROBLEM), trial


def test_every_registered_algorithm_has_a_search_space_or_nothing_to_tune() -> None:
    assert set(HYPERPARAMS_SAMPLER) | NOTHING_TO_TUNE == set(algo_names())
    assert not set(HYPERPARAMS_SAMPLER) & NOTHING_TO_TUNE


@pytest.mark.parametrize("algo", sorted(HYPERPARAMS_SAMPLER))
def test_sampled_hyperparams_are_accepted_by_the_agent(algo: str) -> None:
    for seed in range(3):
        params, trial = sampled(algo, seed)
        assert params and set(params) == set(trial.params)  # every suggestion is named after its config key
        hyper = {**train_agent.algo_defaults(algo, "HAQ-MobileNetV2-v0"), **params}
        hyper.pop("n_episodes", None)
        check_hyperparams(algo, hyper)
        if algo == "haq-ddpg":
            HAQDDPGConfig(**hyper)
        elif algo in SB3_ALGORITHMS:
            cls = SB3_ALGORITHMS[algo].runner.algo_class
            env = ShapeOnlyEnv(get_spec(algo).action_modes[0])
            cls(env=env, device="cpu", **constructor_kwargs(cls, hyper, env.action_space, PROBLEM.episode_length))


def test_fixed_hyperparams_are_not_searched() -> None:
    params, trial = sampled("haq-ddpg", 0, fixed={"warmup": 7, "tau": 0.5})
    assert params["warmup"] == 7 and params["tau"] == 0.5
    assert "warmup" not in trial.params and "tau" not in trial.params and "lr_actor" in trial.params


def test_ranges_follow_the_problem() -> None:
    """Warm-ups stay within a quarter of the budget; step counts are whole episodes."""
    small = SearchProblem(episodes=8, episode_length=50, min_bit=3, max_bit=6)
    for seed in range(5):
        trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed)).ask()
        assert 1 <= HYPERPARAMS_SAMPLER["haq-ddpg"](trial, small)["warmup"] <= 2
        trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed)).ask()
        sac = HYPERPARAMS_SAMPLER["sac"](trial, small)
        assert sac["learning_starts"] in (50, 100)
        trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed)).ask()
        assert HYPERPARAMS_SAMPLER["ppo"](trial, small)["n_steps"] % 50 == 0
        trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed)).ask()
        assert 3 <= HYPERPARAMS_SAMPLER["greedy-sensitivity"](trial, small)["probe_bits"] <= 5


def test_algorithms_without_knobs_say_there_is_nothing_to_tune() -> None:
    with pytest.raises(
        ValueError, match="random has no hyperparameters, so there is nothing to tune; --optimize works with a2c, ars"
    ):
        get_hyperparams_sampler("random")
    with pytest.raises(ValueError, match="no hyperparameter search space for algorithm 'nope'"):
        get_hyperparams_sampler("nope")
