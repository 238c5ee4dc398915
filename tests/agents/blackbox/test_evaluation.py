"""EvaluationBudget and the cost helpers: one full policy per evaluation, validated, never overspent."""

from __future__ import annotations

import numpy as np
import pytest

from agents.blackbox import EvaluationBudget, meets_budget, policy_costs


def test_evaluation_evaluates_the_bits_of_every_decision(make_problem) -> None:
    problem = make_problem()
    n = len(problem.decisions)
    bits = np.random.default_rng(0).integers(problem.min_bit, 4, size=n).tolist()  # cheap enough to meet the budget
    assert meets_budget(problem, bits)
    with EvaluationBudget(problem, 1, "test", progress=False) as evaluate:
        outcome = evaluate(bits)
    assert outcome.proposed == problem.policy_from_decisions(bits)
    assert outcome.policy == outcome.proposed and outcome.budget_met and not outcome.enforced
    assert outcome.latency_ratio == pytest.approx(policy_costs(problem, bits).latency_ratio)
    # pinned layers keep their bits; every decision got its own
    assert outcome.policy[0] == [8, -1] and outcome.policy[-1] == [8, 8]
    assert [outcome.policy[layer][j] for layer, j in problem.decisions] == bits


def test_over_budget_bits_come_back_enforced(make_problem) -> None:
    problem = make_problem()
    top = [problem.max_bit] * len(problem.decisions)
    assert not meets_budget(problem, top)
    with EvaluationBudget(problem, 1, "test", progress=False) as evaluate:
        outcome = evaluate(top)
    assert outcome.proposed == problem.policy_from_decisions(top)
    assert outcome.enforced and outcome.budget_met


def test_bad_bits_are_rejected_clearly(make_problem) -> None:
    problem = make_problem()
    n = len(problem.decisions)
    evaluate = EvaluationBudget(problem, 10, "test", progress=False)
    with pytest.raises(ValueError, match=rf"expected {n} bit widths \(one per decision of the problem\), got {n - 1}"):
        evaluate([4] * (n - 1))
    with pytest.raises(ValueError, match=rf"expected {n} bit widths .*got {n + 1}"):
        evaluate([4] * (n + 1))
    with pytest.raises(ValueError, match=r"bit widths must be in 2\.\.8 .*decision 5 \(\d+, [01]\) has 9"):
        evaluate([4] * 5 + [9] + [4] * (n - 6))
    with pytest.raises(ValueError, match=r"must be in 2\.\.8 .*decision 0 .* has 1"):
        evaluate([1] + [4] * (n - 1))
    with pytest.raises(ValueError, match=r"bit widths must be integers; decision 2 has 3\.5"):
        evaluate([4, 4, 3.5] + [4] * (n - 3))
    assert evaluate.used == 0


def test_evaluation_budget_never_overspends(make_problem) -> None:
    problem = make_problem()
    bits = [problem.min_bit] * len(problem.decisions)
    with EvaluationBudget(problem, 2, "test", progress=False) as evaluate:
        evaluate(bits)
        evaluate(bits)
        assert evaluate.remaining == 0
        with pytest.raises(RuntimeError, match="budget of 2 episodes is spent"):
            evaluate(bits)
    with pytest.raises(ValueError, match="at least 1"):
        EvaluationBudget(problem, 0, "test", progress=False)
