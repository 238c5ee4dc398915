"""The benchmark's statistics: rliable intervals and rank agreement."""

from __future__ import annotations

import numpy as np
import pytest

from haq_gym.experiments.statistics import mean_difference, probability_of_improvement, rank_agreement, summarise


def test_summary_mean_iqm_and_intervals_bracket_them() -> None:
    scores = [90.0, 91.0, 92.0, 93.0, 94.0, 95.0, 96.0, 97.0]
    out = summarise(scores, reps=2000, seed=0)
    assert out["mean"].value == pytest.approx(93.5)
    assert out["iqm"].value == pytest.approx(np.mean([92.0, 93.0, 94.0, 95.0]))
    for interval in out.values():
        assert interval.low < interval.value < interval.high
        assert interval.low >= 90.0 and interval.high <= 97.0


def test_clear_difference_has_an_interval_excluding_zero_and_noise_does_not() -> None:
    rng = np.random.default_rng(0)
    better = (92 + rng.normal(0, 0.3, 8)).tolist()
    worse = (90 + rng.normal(0, 0.3, 8)).tolist()
    diff = mean_difference(better, worse, reps=2000, seed=0)
    assert diff.value == pytest.approx(np.mean(better) - np.mean(worse))
    assert diff.low > 0 and diff.excludes_zero()
    same = mean_difference(worse, worse[::-1], reps=2000, seed=0)
    assert not same.excludes_zero()


def test_probability_of_improvement_counts_wins_and_half_ties() -> None:
    assert probability_of_improvement([2.0, 3.0], [1.0, 1.5], reps=500, seed=0).value == pytest.approx(1.0)
    assert probability_of_improvement([1.0], [1.0], reps=500, seed=0).value == pytest.approx(0.5)
    assert probability_of_improvement([0.0, 3.0], [1.0, 2.0], reps=500, seed=0).value == pytest.approx(0.5)


def test_intervals_repeat_for_a_seed_and_leave_numpy_global_state_alone() -> None:
    scores = [1.0, 5.0, 2.0, 8.0, 3.0]
    np.random.seed(123)
    expected_next = np.random.get_state()[1][:5].copy()
    first = summarise(scores, 1000, seed=3)
    assert (np.random.get_state()[1][:5] == expected_next).all()
    assert summarise(scores, 1000, seed=3) == first
    assert summarise(scores, 1000, seed=4) != first


def test_rank_agreement_overall_and_top_third() -> None:
    proxy = list(range(9))
    final = [0, 1, 2, 3, 4, 5, 8, 7, 6]  # the top third is ordered backwards
    ra = rank_agreement(proxy, final)
    assert ra.n == 9 and ra.top_n == 3
    assert ra.kendall_tau > 0.6 and ra.spearman_rho > 0.8
    assert ra.top_kendall_tau == pytest.approx(-1.0) and ra.top_spearman_rho == pytest.approx(-1.0)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="no scores"):
        summarise([], 100, 0)
    with pytest.raises(ValueError, match="at least 3"):
        rank_agreement([1.0, 2.0], [1.0, 2.0])
