"""Evaluating whole policies on the policy problem, so black-box searches spend evaluations like RL agents.

A black-box search proposes one bit width per decision of the problem
(:attr:`~haq_gym.problem.PolicyProblem.decisions`) at a time and evaluates it with
:meth:`~haq_gym.problem.PolicyProblem.evaluate`; the problem's observers (the run's
``RunRecorder``) count and record it exactly as an RL agent's episode. The problem's
enforcement wall may still lower bits to meet the budget; the returned
:class:`~haq_gym.problem.Outcome` describes the policy actually evaluated.

The cost helpers below use the problem's cost model only: they never spend an evaluation.
:class:`EvaluationBudget` makes sure no runner spends more than its episodes, and makes
every runner that evaluates through it resumable: a black-box strategy's state is a
function of its seed and of the outcomes it was given, so a resumed run replays the
recorded outcomes to it (see :class:`EvaluationBudget`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from haq_gym.cost import Costs
from haq_gym.problem import Outcome, PolicyProblem

if TYPE_CHECKING:
    from haq_gym.runs.checkpoint import SearchCheckpoint


class ReplayMismatch(ValueError):
    """A resumed strategy proposed something other than what its run recorded (so it cannot continue it exactly)."""


def policy_costs(problem: PolicyProblem, decision_bits: Sequence[int]) -> Costs:
    """Costs of ``decision_bits`` from the cost model (no evaluation, no enforcement)."""
    return problem.costs(problem.policy_from_decisions(decision_bits))


def meets_budget(problem: PolicyProblem, decision_bits: Sequence[int]) -> bool:
    """Whether ``decision_bits`` meets the problem's budgets as it is, so the enforcement wall leaves it alone."""
    return problem.meets_budget(problem.policy_from_decisions(decision_bits))


class EvaluationBudget:
    """Spends at most ``episodes`` evaluations of ``problem``, with a progress bar; checkpoints and replays.

    Every black-box runner evaluates through one of these, so none can overspend the
    episode budget; it also tracks the best reward among policies that met the budget,
    shown on the bar. Use as a context manager (closes the bar).

    With ``checkpoint`` (a :class:`~haq_gym.runs.checkpoint.SearchCheckpoint`), every
    evaluation ends an episode there (a checkpoint holds nothing but the global RNG states
    and the episode count). When the checkpoint holds episodes (a resumed run), the runner
    is run again from its start, and its first ``checkpoint.episodes`` calls are answered
    from ``checkpoint.history`` (:meth:`~haq_gym.problem.PolicyProblem.recorded`: nothing
    evaluated, nothing recorded), each checked against the record (:class:`ReplayMismatch`
    if the strategy proposes a policy the run did not evaluate there); the global RNGs are
    put back when the replay ends. A deterministic strategy (given its seed and outcomes)
    thus continues exactly as the run it resumes, with no state of its own on disk.
    """

    def __init__(
        self,
        problem: PolicyProblem,
        episodes: int,
        name: str,
        progress: bool = True,
        checkpoint: SearchCheckpoint | None = None,
    ) -> None:
        if episodes < 1:
            raise ValueError(f"episodes must be at least 1, got {episodes}")
        self.problem = problem
        self.episodes = episodes
        self.used = 0
        self.best_reward = -math.inf
        self.checkpoint = checkpoint
        self._replay = checkpoint.history[: checkpoint.episodes] if checkpoint is not None else []
        if checkpoint is not None and len(self._replay) < checkpoint.episodes:
            raise ValueError(
                f"the checkpoint holds {checkpoint.episodes} episodes but only {len(self._replay)} recorded "
                "evaluations were given to replay"
            )
        self._bar = tqdm(total=episodes, desc=name, unit="eval", disable=not progress)

    @property
    def remaining(self) -> int:
        return self.episodes - self.used

    def __call__(self, decision_bits: Sequence[int]) -> Outcome:
        """Evaluate ``decision_bits`` (one bit width per decision); raises once the budget is spent."""
        if self.remaining <= 0:
            raise RuntimeError(f"evaluation budget of {self.episodes} episodes is spent")
        policy = self.problem.policy_from_decisions(decision_bits)
        replaying = self.used < len(self._replay)
        outcome = self._replayed(policy) if replaying else self.problem.evaluate(policy)
        self.used += 1
        if outcome.budget_met:
            self.best_reward = max(self.best_reward, float(outcome.reward))
        self._bar.update(1)
        self._bar.set_postfix(reward=f"{outcome.reward:.4f}", best=f"{self.best_reward:.4f}")
        if self.checkpoint is not None:
            if self.used == len(self._replay):
                self.checkpoint.restore(_no_state)
            elif self.used > len(self._replay):
                self.checkpoint.episode_end(self.used, _no_state)
        return outcome

    def _replayed(self, policy: list[list[int]]) -> Outcome:
        """The recorded outcome of episode ``used + 1``, if ``policy`` is what the run evaluated there."""
        recorded, accuracy = self._replay[self.used]
        outcome = self.problem.recorded(policy, accuracy)
        if outcome.policy != recorded:
            raise ReplayMismatch(
                f"the resumed run does not retrace its record: episode {self.used + 1} evaluates {outcome.policy}, "
                f"episodes.csv has {recorded} (was the run made with another version of the strategy?)"
            )
        return outcome

    def __enter__(self) -> EvaluationBudget:
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.close()


def _no_state(folder: Path) -> None:
    """Saves or loads a replaying strategy's own checkpoint state: there is none."""
