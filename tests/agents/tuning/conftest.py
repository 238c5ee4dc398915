"""Fixtures of the tuning tests: the ``--optimize`` command line of the tiny problem, study access, workers."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
import torch

from agents.tuning import optimize
from agents.tuning.storage import open_storage

REPO = Path(__file__).resolve().parents[3]
STUDY = "tiny"


@pytest.fixture
def tuning_args(tiny_env_kwargs: dict) -> Callable[..., list[str]]:
    """``tuning_args(out, n_trials=2, episodes=2, n_seeds=1, extra=())``: ``train_agent.py`` arguments that tune
    haq-ddpg (small networks, warm-up fixed at 1, report every evaluation, sampler seed 0) on the tiny problem."""

    def make(
        out: Path, n_trials: int = 2, episodes: int = 2, n_seeds: int = 1, extra: tuple[str, ...] = ()
    ) -> list[str]:
        return [
            "--algo",
            "haq-ddpg",
            "--optimize",
            "--study-name",
            STUDY,
            "--output",
            str(out),
            "--n-trials",
            str(n_trials),
            "--episodes",
            str(episodes),
            "--n-seeds",
            str(n_seeds),
            "--seed",
            "0",
            "--report-every",
            "1",
            *extra,
            "--env-kwargs",
            *(f"{k}={v}" for k, v in tiny_env_kwargs.items()),
            "--hyperparams",
            "warmup=1",
            "batch_size=16",
            "hidden1=32",
            "hidden2=32",
        ]

    return make


@pytest.fixture
def load_study() -> Callable[..., optuna.Study]:
    """``load_study(storage, name="tiny")``: the study in a journal path or database URL."""

    def load(storage: str | Path, name: str = STUDY) -> optuna.Study:
        return optuna.load_study(study_name=name, storage=open_storage(os.fspath(storage)))

    return load


@pytest.fixture
def worker_cmd() -> Callable[[list[str]], list[str]]:
    """``worker_cmd(args)``: the command line of a ``train_agent.py`` subprocess."""
    return lambda args: [sys.executable, os.fspath(REPO / "train_agent.py"), *args]


@pytest.fixture
def worker_env() -> dict[str, str]:
    """Environment of worker subprocesses: the test cache (root conftest) and one torch thread (``one_thread``)."""
    return {**os.environ, "PYTHONPATH": os.fspath(REPO)}


@pytest.fixture(autouse=True)
def one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """One torch thread (``train_agent.main`` reads HAQ_GYM_THREADS): the tiny model gains nothing from two,
    and on a shared 2-core machine two threads per process oversubscribe it."""
    monkeypatch.setenv("HAQ_GYM_THREADS", "1")
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def built_setups() -> dict:
    return {}


@pytest.fixture(autouse=True)
def build_each_problem_once(monkeypatch: pytest.MonkeyPatch, built_setups: dict) -> None:
    """In this process, tunings of the same problem share one built search setup (saves seconds per tuning;
    worker subprocesses build their own). Sharing is what one tuning does between its runs anyway."""
    build = optimize._problem_and_setup

    def cached(settings: optimize.TuningSettings):
        key = json.dumps([settings.env_id, settings.env_kwargs, settings.n_episodes], sort_keys=True)
        if key not in built_setups:
            built_setups[key] = build(settings)
        return built_setups[key]

    monkeypatch.setattr(optimize, "_problem_and_setup", cached)


@pytest.fixture(autouse=True)
def quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield
    optuna.logging.set_verbosity(optuna.logging.INFO)
