"""Evaluating whole policies on the policy problem, so black-box searches spend evaluations like RL agents.

A black-box search proposes one bit width per decision of the problem
(:attr:`~haq_gym.problem.PolicyProblem.decisions`) at a time and evaluates it with
:meth:`~haq_gym.problem.PolicyProblem.evaluate`; the problem's observers (the run's
``RunRecorder``) count and record it exactly as an RL agent's episode. The problem's
enforcement wall may still lower bits to meet the budget; the returned
:class:`~haq_gym.problem.Outcome` describes the policy actually evaluated.

The cost helpers below use the problem's cost model only: they never spend an evaluation.
:class:`EvaluationBudget` makes sure no runner spends more than its episodes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from tqdm import tqdm

from haq_gym.cost import Costs
from haq_gym.problem import Outcome, PolicyProblem


def policy_costs(problem: PolicyProblem, decision_bits: Sequence[int]) -> Costs:
    """Costs of ``decision_bits`` from the cost model (no evaluation, no enforcement)."""
    return problem.costs(problem.policy_from_decisions(decision_bits))


def meets_budget(problem: PolicyProblem, decision_bits: Sequence[int]) -> bool:
    """Whether ``decision_bits`` meets the problem's budgets as it is, so the enforcement wall leaves it alone."""
    return problem.meets_budget(problem.policy_from_decisions(decision_bits))


class EvaluationBudget:
    """Spends at most ``episodes`` evaluations of ``problem``, with a progress bar.

    Every black-box runner evaluates through one of these, so none can overspend the
    episode budget; it also tracks the best reward among policies that met the budget,
    shown on the bar. Use as a context manager (closes the bar).
    """

    def __init__(self, problem: PolicyProblem, episodes: int, name: str, progress: bool = True) -> None:
        if episodes < 1:
            raise ValueError(f"episodes must be at least 1, got {episodes}")
        self.problem = problem
        self.episodes = episodes
        self.used = 0
        self.best_reward = -math.inf
        self._bar = tqdm(total=episodes, desc=name, unit="eval", disable=not progress)

    @property
    def remaining(self) -> int:
        return self.episodes - self.used

    def __call__(self, decision_bits: Sequence[int]) -> Outcome:
        """Evaluate ``decision_bits`` (one bit width per decision); raises once the budget is spent."""
        if self.remaining <= 0:
            raise RuntimeError(f"evaluation budget of {self.episodes} episodes is spent")
        outcome = self.problem.evaluate(self.problem.policy_from_decisions(decision_bits))
        self.used += 1
        if outcome.budget_met:
            self.best_reward = max(self.best_reward, float(outcome.reward))
        self._bar.update(1)
        self._bar.set_postfix(reward=f"{outcome.reward:.4f}", best=f"{self.best_reward:.4f}")
        return outcome

    def __enter__(self) -> EvaluationBudget:
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.close()
