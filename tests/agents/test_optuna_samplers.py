"""The one Optuna sampler builder shared by the tuner and the black-box searches."""

from __future__ import annotations

import optuna
import pytest

from agents.optuna_samplers import SAMPLER_NAMES, build_sampler

CLASSES = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "gp": optuna.samplers.GPSampler,
    "nsga2": optuna.samplers.NSGAIISampler,
}


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_every_name_builds_its_sampler(name: str) -> None:
    assert type(build_sampler(name, 0)) is CLASSES[name]


def test_options_reach_the_constructor_and_population_size_is_cmaes_popsize() -> None:
    assert build_sampler("tpe", 0, {"n_startup_trials": 3})._n_startup_trials == 3
    assert build_sampler("cmaes", 0, {"population_size": 6})._popsize == 6


def test_same_seed_same_proposals() -> None:
    def proposals(seed: int) -> list[int]:
        study = optuna.create_study(sampler=build_sampler("tpe", seed, {"n_startup_trials": 2}))
        study.optimize(lambda t: t.suggest_int("x", 0, 100), n_trials=5)
        return [t.params["x"] for t in study.trials]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    assert proposals(3) == proposals(3)


def test_unknown_sampler_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown sampler 'skopt'; expected one of tpe, random, cmaes, gp, nsga2"):
        build_sampler("skopt", 0)
