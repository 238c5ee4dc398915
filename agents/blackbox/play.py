"""Playing whole policies through a haq-gym env, so black-box searches spend evaluations like RL agents.

A black-box search proposes one bit width per decision (``env.unwrapped.decisions``)
at a time. :func:`play_policy` plays such a proposal through the env, one step per
decision, so every evaluation goes through the env (and its ``RunRecorder``): counted,
written to ``episodes.csv`` and considered for ``best_policy.json`` exactly as an RL
agent's episode would be. The env's enforcement wall may still lower bits to meet the
budget; the returned ``info`` describes the policy actually evaluated.

The cost helpers below use the env's cost model only: they never spend an evaluation.
:class:`EvaluationBudget` makes sure no runner spends more than its episodes.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
from tqdm import tqdm

from haq_gym.cost import Costs


def _checked_bits(env: gym.Env, decision_bits: Sequence[int]) -> list[int]:
    """``decision_bits`` as ints, after checking there is one per decision, each in the env's bit range."""
    base = env.unwrapped
    n = len(base.decisions)
    if len(decision_bits) != n:
        raise ValueError(f"expected {n} bit widths (one per decision of env.unwrapped.decisions), "
                         f"got {len(decision_bits)}")
    bits = []
    for i, b in enumerate(decision_bits):
        try:
            bits.append(operator.index(b))
        except TypeError:
            raise ValueError(f"bit widths must be integers; decision {i} has {b!r}") from None
        if not base.min_bit <= bits[-1] <= base.max_bit:
            raise ValueError(f"bit widths must be in {base.min_bit}..{base.max_bit} (the env's min_bit..max_bit); "
                             f"decision {i} {base.decisions[i]} has {bits[-1]}")
    return bits


def full_policy(env: gym.Env, decision_bits: Sequence[int]) -> list[list[int]]:
    """The ``[[w_bit, a_bit], ...]`` policy of ``decision_bits``, with the env's pinned bits filled in."""
    base = env.unwrapped
    policy = [list(p) for p in base.pinned]
    for (layer, j), b in zip(base.decisions, _checked_bits(env, decision_bits)):
        policy[layer][j] = b
    return policy


def policy_costs(env: gym.Env, decision_bits: Sequence[int]) -> Costs:
    """Costs of ``decision_bits`` from the cost model (no evaluation, no enforcement)."""
    return env.unwrapped.setup.cost_model.costs(full_policy(env, decision_bits))


def meets_budget(env: gym.Env, decision_bits: Sequence[int]) -> bool:
    """Whether ``decision_bits`` meets the env's budgets as it is, so the enforcement wall leaves it alone."""
    return env.unwrapped.budget.satisfied(policy_costs(env, decision_bits))


def play_policy(env: gym.Env, decision_bits: Sequence[int]) -> dict[str, Any]:
    """Play one full policy (one bit width per decision) as one episode; return the final step's ``info``."""
    base = env.unwrapped
    bits = _checked_bits(env, decision_bits)
    env.reset()
    terminated = False
    info: dict[str, Any] = {}
    for b in bits:
        if terminated:
            raise RuntimeError("the env ended the episode before every decision was played")
        _, _, terminated, _, info = env.step(base.bits_to_action(b))
    if not terminated:
        raise RuntimeError(f"the env did not end the episode after its {len(bits)} decisions")
    return info


class EvaluationBudget:
    """Spends at most ``episodes`` evaluations through :func:`play_policy`, with a progress bar.

    Every black-box runner evaluates through one of these, so none can overspend the
    episode budget; it also tracks the best reward among policies that met the budget,
    shown on the bar. Use as a context manager (closes the bar).
    """

    def __init__(self, env: gym.Env, episodes: int, name: str, progress: bool = True) -> None:
        if episodes < 1:
            raise ValueError(f"episodes must be at least 1, got {episodes}")
        self.env = env
        self.episodes = episodes
        self.used = 0
        self.best_reward = -math.inf
        self._bar = tqdm(total=episodes, desc=name, unit="eval", disable=not progress)

    @property
    def remaining(self) -> int:
        return self.episodes - self.used

    def __call__(self, decision_bits: Sequence[int]) -> dict[str, Any]:
        """Evaluate ``decision_bits`` (one episode); raises once the budget is spent."""
        if self.remaining <= 0:
            raise RuntimeError(f"evaluation budget of {self.episodes} episodes is spent")
        info = play_policy(self.env, decision_bits)
        self.used += 1
        if info["budget_met"]:
            self.best_reward = max(self.best_reward, float(info["reward"]))
        self._bar.update(1)
        self._bar.set_postfix(reward=f"{info['reward']:.4f}", best=f"{self.best_reward:.4f}")
        return info

    def __enter__(self) -> EvaluationBudget:
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.close()
