"""A resumed study with the same --seed draws new parameters: each trial's sampler seed follows the trial count."""

from __future__ import annotations

import optuna
import pytest

from agents.tuning import optimize
from agents.tuning.optimize import TuningSettings, run_worker, trial_sampler_seed

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


class DrawOnly:
    """Stands in for a trial's search runs: only the sampled parameters matter here."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __call__(self, trial: optuna.Trial) -> float:
        return trial.suggest_float("x", 0.0, 1.0) + trial.suggest_int("k", 0, 1000)


def params(out, n_trials: int, sampler: str, seed: int = 0) -> list[tuple]:
    settings = TuningSettings(
        algo="haq-ddpg",
        env_id="HAQ-MobileNetV2-v0",
        env_kwargs={},
        n_episodes=2,
        base_hyperparams={},
        fixed_hyperparams={},
        output=str(out),
        n_trials=n_trials,
        sampler=sampler,
        pruner="none",
        seed=seed,
    )
    out.mkdir(exist_ok=True)
    run_worker(settings)
    study = optuna.load_study(study_name=settings.name, storage=optimize.open_storage(settings.storage_url))
    return [(t.params["x"], t.params["k"]) for t in study.trials]


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_resumed_study_does_not_repeat_its_first_trials(monkeypatch, tmp_path, sampler) -> None:
    monkeypatch.setattr(optimize, "Objective", DrawOnly)
    monkeypatch.setattr(optimize, "_problem_and_setup", lambda settings: (None, None))
    first = params(tmp_path / "a", 2, sampler)
    resumed = params(tmp_path / "a", 4, sampler)  # the same command with a larger target: a resume
    assert resumed[:2] == first
    assert resumed[2] not in first and resumed[3] not in first
    straight = params(tmp_path / "b", 4, sampler)  # the same seed, in one go: the same draws
    assert straight == resumed


def test_trial_seeds_differ_by_trial_count_and_worker_and_stay_unseeded_without_a_seed() -> None:
    seeds = {trial_sampler_seed(0, n, w) for n in range(20) for w in range(3)}
    assert len(seeds) == 60
    assert trial_sampler_seed(7, 3, 1) == trial_sampler_seed(7, 3, 1)
    assert trial_sampler_seed(None, 3) is None
