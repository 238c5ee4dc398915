"""The policy problem with a fake evaluator: outcomes, enforcement, observers, bad input, and the env as its view."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from envs.linear_quantize_env import LinearQuantizeEnv
from haq_gym.evaluation.policy_evaluator import EvalResult
from haq_gym.problem import KMeansProblem, Outcome, PolicyProblem, ProblemConfig, build_problem
from haq_gym.search_setup import SearchSetup, build_search_setup


class CountingEvaluator:
    """Accuracy ``50 + mean weight bits`` (instant, deterministic), cached like the real evaluator; counts calls."""

    def __init__(self) -> None:
        self.calls: list[list[list[int]]] = []
        self.seen: set[tuple] = set()

    def evaluate(self, policy: list[list[int]]) -> EvalResult:
        self.calls.append([list(p) for p in policy])
        key = tuple(map(tuple, policy))
        cached = key in self.seen
        self.seen.add(key)
        return EvalResult(50.0 + float(np.mean([w for w, _ in policy])), 0.0, cached)


@pytest.fixture(scope="module")
def real_setup(tiny_env_kwargs: dict) -> SearchSetup:
    return build_search_setup(**tiny_env_kwargs)


@pytest.fixture
def setup(real_setup: SearchSetup) -> SearchSetup:
    return dataclasses.replace(real_setup, evaluator=CountingEvaluator(), reference_accuracy=54.0)


def test_decisions_and_pins_follow_the_config(setup: SearchSetup) -> None:
    problem = PolicyProblem(ProblemConfig(), setup)
    n = len(setup.layers)
    assert problem.pinned[0] == [8, -1] and problem.pinned[-1] == [8, 8]
    assert len(problem.decisions) == 2 * n - 4 and problem.decisions[0] == (1, 0)
    unpinned = PolicyProblem(ProblemConfig(pin_first_last=False), setup)
    assert unpinned.pinned[0] == [None, -1] and len(unpinned.decisions) == 2 * n - 1


def test_an_affordable_policy_is_evaluated_as_proposed(setup: SearchSetup) -> None:
    problem = PolicyProblem(ProblemConfig(), setup)
    policy = problem.policy_from_decisions([2] * len(problem.decisions))
    outcome = problem.evaluate(policy)
    assert isinstance(outcome, Outcome)
    assert outcome.policy == outcome.proposed == policy and not outcome.enforced
    expected_acc = 50.0 + np.mean([w for w, _ in policy])
    assert outcome.accuracy == pytest.approx(expected_acc) and outcome.reference_accuracy == 54.0
    assert outcome.reward == pytest.approx(0.1 * (expected_acc - 54.0))  # HAQ's reward
    assert outcome.costs == setup.cost_model.costs(policy) and outcome.budget_met
    assert not outcome.cached and outcome.eval_time_s >= 0
    assert problem.evaluate(policy).cached  # the evaluator's cache shows through
    assert setup.evaluator.calls == [policy, policy]


def test_an_over_budget_policy_is_enforced_before_evaluation(setup: SearchSetup) -> None:
    problem = PolicyProblem(ProblemConfig(latency_budget=0.4), setup)
    top = problem.policy_from_decisions([8] * len(problem.decisions))
    assert not problem.meets_budget(top)
    outcome = problem.evaluate(top)
    assert outcome.proposed == top and outcome.enforced and outcome.budget_met
    assert outcome.latency_ratio <= 0.4 + 1e-9
    assert setup.evaluator.calls == [outcome.policy]  # only the enforced policy is evaluated
    haq_wall = PolicyProblem(ProblemConfig(latency_budget=0.4, enforcement="haq"), setup).evaluate(top)
    assert haq_wall.policy != outcome.policy and haq_wall.budget_met


def test_the_reward_is_the_configured_one(setup: SearchSetup) -> None:
    problem = PolicyProblem(ProblemConfig(reward="haq_flash"), setup)
    outcome = problem.evaluate(problem.policy_from_decisions([3] * len(problem.decisions)))
    assert outcome.reward == pytest.approx(0.1 * (outcome.accuracy - 54.0 + 0.75 / outcome.flash_ratio))


def test_observers_see_every_outcome_in_order_until_removed(setup: SearchSetup) -> None:
    problem = PolicyProblem(ProblemConfig(), setup)
    seen: list[tuple[str, Outcome]] = []
    first, second = (lambda o: seen.append(("first", o))), (lambda o: seen.append(("second", o)))
    problem.add_observer(first)
    problem.add_observer(second)
    policy = problem.policy_from_decisions([4] * len(problem.decisions))
    outcome = problem.evaluate(policy)
    assert seen == [("first", outcome), ("second", outcome)]
    problem.remove_observer(first)
    problem.evaluate(policy)
    assert [name for name, _ in seen] == ["first", "second", "second"]

    def stop(outcome: Outcome) -> None:
        raise KeyboardInterrupt

    problem.add_observer(stop)
    with pytest.raises(KeyboardInterrupt):  # an observer can stop the search that evaluates
        problem.evaluate(policy)


def test_bad_policies_and_configs_are_rejected_clearly(setup: SearchSetup) -> None:
    problem = PolicyProblem(ProblemConfig(), setup)
    n = len(setup.layers)
    good = problem.policy_from_decisions([4] * len(problem.decisions))
    with pytest.raises(ValueError, match=rf"expected a policy of {n} \[w_bit, a_bit\] pairs, got {n - 1}"):
        problem.evaluate(good[:-1])
    with pytest.raises(ValueError, match="layer 0 weight is pinned at 8, got 4"):
        problem.evaluate([[4, -1]] + good[1:])
    with pytest.raises(ValueError, match=r"layer 3 activation bits must be in 2\.\.8, got 9"):
        problem.evaluate(good[:3] + [[4, 9]] + good[4:])
    assert setup.evaluator.calls == []
    for kwargs, message in [
        ({"min_bit": 1}, r"need 2 <= min_bit <= max_bit <= 8"),
        ({"enforcement": "wall"}, "unknown enforcement 'wall'"),
        ({"reward": "acc"}, "unknown reward 'acc'"),
        ({"quantizer": "kmeans", "reward": "autoq", "latency_budget": None}, "the k-means flow has HAQ's reward"),
    ]:
        with pytest.raises(ValueError, match=message):
            ProblemConfig(**kwargs)
    with pytest.raises(ValueError, match=r"latency budget 0\.01 is impossible"):
        PolicyProblem(ProblemConfig(latency_budget=0.01), setup)


def test_the_env_is_a_view_whose_last_step_is_the_problems_outcome(setup: SearchSetup) -> None:
    env = LinearQuantizeEnv(setup=setup, action_mode="discrete", latency_budget=0.4)
    bits = np.random.default_rng(1).integers(2, 9, size=len(env.decisions)).tolist()
    env.reset(seed=0)
    for b in bits:
        _, reward, terminated, _, info = env.step(env.bits_to_action(b))
    assert terminated
    direct = PolicyProblem(ProblemConfig(latency_budget=0.4), setup).evaluate(env.problem.policy_from_decisions(bits))
    assert not info["cached"] and direct.cached  # same setup: the env's evaluation is in the evaluator's cache
    expected = {k: v for k, v in direct.info().items() if k not in ("eval_time_s", "cached")}
    assert {k: v for k, v in info.items() if k in expected} == expected and reward == direct.reward


def test_build_problem_picks_the_flow(real_setup: SearchSetup, tiny_env_kwargs: dict) -> None:
    kmeans_setup = build_search_setup(**{**tiny_env_kwargs, "calibration_size": 1})
    kmeans = build_problem(
        ProblemConfig(quantizer="kmeans", latency_budget=None, flash_budget=0.2, min_bit=1, pin_first_last=False),
        kmeans_setup,
    )
    assert isinstance(kmeans, KMeansProblem) and kmeans.pinned == [[None, -1]] * len(kmeans_setup.layers)
    assert kmeans.cost_model.flash_reference_bit == 32
    assert type(build_problem(ProblemConfig(), real_setup)) is PolicyProblem
