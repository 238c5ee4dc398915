"""Fixtures of the black-box baseline tests: one real tiny search setup, and a fast stand-in evaluator.

A real evaluation of the tiny problem takes seconds on a busy CPU, so most tests swap the
setup's evaluator for :class:`FakeEvaluator` (a deterministic, instant accuracy that
falls as bits fall, more for some decisions than others). Everything else is real: the
policy problem, its enforcement wall, the cost model and the ``RunRecorder``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from haq_gym.evaluation.policy_evaluator import EvalResult
from haq_gym.problem import PolicyProblem, ProblemConfig
from haq_gym.runs import RunRecorder
from haq_gym.search_setup import SearchSetup, build_search_setup


class FakeEvaluator:
    """Accuracy ``90 - 40 * mean(w * (2**(8-b) - 1) / 63)`` over every weight/activation bit width ``b``.

    ``w`` (one weight per layer and tensor, drawn from a seeded generator) is the tensor's
    sensitivity; unquantized tensors (-1) count as 8 bits. Identical policies are
    answered from a cache, like the real evaluator.
    """

    def __init__(self, n_layers: int, seed: int = 0) -> None:
        self.weights = np.random.default_rng(seed).uniform(0.1, 1.0, size=(n_layers, 2))
        self.cache: dict[tuple, float] = {}

    def accuracy(self, policy: list[list[int]]) -> float:
        bits = np.where(np.asarray(policy) == -1, 8, np.asarray(policy))
        return float(90.0 - 40.0 * np.mean(self.weights * (2.0 ** (8 - bits) - 1) / 63.0))

    def evaluate(self, policy: list[list[int]]) -> EvalResult:
        key = tuple(tuple(int(b) for b in p) for p in policy)
        cached = key in self.cache
        self.cache.setdefault(key, self.accuracy(policy))
        return EvalResult(self.cache[key], 0.0, cached)


@pytest.fixture(scope="package")
def real_setup(tiny_env_kwargs: dict) -> SearchSetup:
    """The tiny problem, built once for the whole folder."""
    return build_search_setup(**tiny_env_kwargs)


@pytest.fixture
def fake_setup(real_setup: SearchSetup) -> SearchSetup:
    """The tiny problem with the instant :class:`FakeEvaluator` (a copy: the shared setup is untouched)."""
    return dataclasses.replace(real_setup, evaluator=FakeEvaluator(len(real_setup.layers)))


@pytest.fixture
def make_problem(fake_setup: SearchSetup) -> Callable[..., PolicyProblem]:
    """``make_problem(**config)``: a fresh policy problem on the fake-evaluator setup (``ProblemConfig`` keywords)."""

    def make(**kwargs) -> PolicyProblem:
        return PolicyProblem(ProblemConfig(**kwargs), fake_setup)

    return make


@pytest.fixture
def make_recorded(make_problem: Callable[..., PolicyProblem]) -> Callable[..., RunRecorder]:
    """``make_recorded(run_dir, **config)``: a fake-evaluator problem recorded into ``run_dir`` (no TensorBoard)."""

    def make(run_dir: Path, **kwargs) -> RunRecorder:
        run_dir.mkdir(parents=True, exist_ok=True)
        return RunRecorder(make_problem(**kwargs), run_dir, tensorboard=False)

    return make
