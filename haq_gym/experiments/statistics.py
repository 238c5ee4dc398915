"""Statistics a reviewer accepts for "is this search better than that baseline?".

Point estimates and 95% stratified-bootstrap confidence intervals come from ``rliable``
(Agarwal et al., NeurIPS 2021), the library made for comparing a few runs per method;
rank correlations from SciPy. Scores are final accuracies in percent, one per run
(search seed x finetune seed), treated as a single task.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats


def _estimate(
    scores: dict[str, Any], func: Callable[..., np.ndarray], reps: int, seed: int
) -> tuple[float, float, float]:
    """rliable's point estimate and 95% percentile interval of ``func`` over ``scores`` (one entry).

    rliable 1.2's bootstraps draw indices from NumPy's global generator whatever
    ``random_state`` says, so the global generator is seeded here and restored afterwards:
    the same seed gives the same interval.
    """
    rly, _ = _rliable()
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="random_state is deprecated", category=FutureWarning)
            points, intervals = rly.get_interval_estimates(
                scores, func, reps=reps, random_state=np.random.RandomState(seed)
            )
    finally:
        np.random.set_state(saved)
    (key,) = scores
    return float(points[key][0]), float(intervals[key][0, 0]), float(intervals[key][1, 0])


def _rliable() -> tuple[Any, Any]:
    try:
        from rliable import library as rly
        from rliable import metrics
    except ImportError as err:  # an optional extra: say how to get it
        raise ImportError("the end-to-end statistics need rliable: pip install 'haq-gym[bench]'") from err
    return rly, metrics


@dataclass(frozen=True)
class Interval:
    """A point estimate with its 95% confidence interval."""

    value: float
    low: float
    high: float

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def __str__(self) -> str:
        return f"{self.value:.2f} [{self.low:.2f}, {self.high:.2f}]"


def _scores(values: Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1, 1)
    if array.size == 0:
        raise ValueError("no scores to summarise")
    return array


def summarise(values: Sequence[float], reps: int, seed: int) -> dict[str, Interval]:
    """Mean and interquartile mean (IQM) of ``values``, each with a 95% stratified-bootstrap interval."""
    _, metrics = _rliable()
    scores = {"x": _scores(values)}
    return {
        name: Interval(*_estimate(scores, lambda x, f=aggregate: np.array([f(x)]), reps, seed))
        for name, aggregate in (("mean", metrics.aggregate_mean), ("iqm", metrics.aggregate_iqm))
    }


def mean_difference(x: Sequence[float], y: Sequence[float], reps: int, seed: int) -> Interval:
    """mean(x) - mean(y) with a 95% interval from rliable's independent stratified bootstrap of both groups."""
    pair = {"x-y": [_scores(x), _scores(y)]}
    return Interval(*_estimate(pair, lambda a, b: np.array([a.mean() - b.mean()]), reps, seed))


def probability_of_improvement(x: Sequence[float], y: Sequence[float], reps: int, seed: int) -> Interval:
    """P(a run of x scores higher than a run of y), ties counting half (rliable's), with a 95% interval."""
    _, metrics = _rliable()
    pair = {"x>y": [_scores(x), _scores(y)]}
    return Interval(*_estimate(pair, lambda a, b: np.array([metrics.probability_of_improvement(a, b)]), reps, seed))


@dataclass(frozen=True)
class RankAgreement:
    """How well a proxy (the search reward) orders policies like their final accuracy does."""

    n: int
    kendall_tau: float
    spearman_rho: float
    top_n: int
    top_kendall_tau: float
    top_spearman_rho: float


def rank_agreement(proxy: Sequence[float], final: Sequence[float]) -> RankAgreement:
    """Kendall tau and Spearman rho between ``proxy`` and ``final``, over all policies and over
    the top third by proxy (the policies a search would return)."""
    proxy_a, final_a = np.asarray(proxy, dtype=np.float64), np.asarray(final, dtype=np.float64)
    if proxy_a.shape != final_a.shape or proxy_a.size < 3:
        raise ValueError(f"need at least 3 paired values, got {proxy_a.size} proxies and {final_a.size} finals")
    top = np.argsort(-proxy_a, kind="stable")[: max(3, proxy_a.size // 3)]
    return RankAgreement(
        n=int(proxy_a.size),
        kendall_tau=float(stats.kendalltau(proxy_a, final_a).statistic),
        spearman_rho=float(stats.spearmanr(proxy_a, final_a).statistic),
        top_n=int(top.size),
        top_kendall_tau=float(stats.kendalltau(proxy_a[top], final_a[top]).statistic),
        top_spearman_rho=float(stats.spearmanr(proxy_a[top], final_a[top]).statistic),
    )
