"""play_policy and the cost helpers: one full policy per episode, validated, in both action modes."""

from __future__ import annotations

import numpy as np
import pytest

from agents.blackbox import EvaluationBudget, full_policy, meets_budget, play_policy, policy_costs


@pytest.mark.parametrize("action_mode", ["discrete", "continuous"])
def test_play_policy_plays_the_bits_in_either_action_mode(make_env, action_mode: str) -> None:
    env = make_env(action_mode=action_mode)
    n = len(env.decisions)
    bits = np.random.default_rng(0).integers(env.min_bit, 4, size=n).tolist()  # cheap enough to meet the budget
    assert meets_budget(env, bits)
    info = play_policy(env, bits)
    assert info["agent_policy"] == full_policy(env, bits)
    assert info["policy"] == info["agent_policy"] and info["budget_met"]
    assert info["latency_ratio"] == pytest.approx(policy_costs(env, bits).latency_ratio)
    # pinned layers keep their bits; every decision got its own
    assert info["policy"][0] == [8, -1] and info["policy"][-1] == [8, 8]
    assert [info["policy"][layer][j] for layer, j in env.decisions] == bits


def test_over_budget_bits_come_back_enforced(make_env) -> None:
    env = make_env()
    top = [env.max_bit] * len(env.decisions)
    assert not meets_budget(env, top)
    info = play_policy(env, top)
    assert info["agent_policy"] == full_policy(env, top)
    assert info["policy"] != info["agent_policy"] and info["budget_met"]


def test_play_policy_rejects_bad_bits_clearly(make_env) -> None:
    env = make_env()
    n = len(env.decisions)
    with pytest.raises(ValueError,
                       match=rf"expected {n} bit widths \(one per decision of env.unwrapped.decisions\), got {n - 1}"):
        play_policy(env, [4] * (n - 1))
    with pytest.raises(ValueError, match=rf"expected {n} bit widths .*got {n + 1}"):
        play_policy(env, [4] * (n + 1))
    with pytest.raises(ValueError, match=r"bit widths must be in 2\.\.8 .*decision 5 \(\d+, [01]\) has 9"):
        play_policy(env, [4] * 5 + [9] + [4] * (n - 6))
    with pytest.raises(ValueError, match=r"must be in 2\.\.8 .*decision 0 .* has 1"):
        play_policy(env, [1] + [4] * (n - 1))
    with pytest.raises(ValueError, match=r"bit widths must be integers; decision 2 has 3\.5"):
        play_policy(env, [4, 4, 3.5] + [4] * (n - 3))


def test_evaluation_budget_never_overspends(make_env) -> None:
    env = make_env()
    bits = [env.min_bit] * len(env.decisions)
    with EvaluationBudget(env, 2, "test", progress=False) as evaluate:
        evaluate(bits)
        evaluate(bits)
        assert evaluate.remaining == 0
        with pytest.raises(RuntimeError, match="budget of 2 episodes is spent"):
            evaluate(bits)
    with pytest.raises(ValueError, match="at least 1"):
        EvaluationBudget(env, 0, "test", progress=False)
