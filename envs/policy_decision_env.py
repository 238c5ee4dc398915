"""The MDP plumbing shared by the haq-gym environments: one step per free bit-width decision of a policy.

A policy is ``[[w_bit, a_bit], ...]``, one pair per quantizable layer. Some entries are
pinned (``-1`` = not quantized, or fixed bits); the agent sets the others, one step
each, in :attr:`PolicyDecisionEnv.decisions` order. Subclasses build the search problem
and define the observation and what happens when the last decision is made.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from haq_gym.cost import Budget
from haq_gym.policy import PolicyFile
from haq_gym.problem import PolicyProblem
from haq_gym.search_setup import SearchSetup

ACTION_MODES = ("continuous", "discrete")


def bit_action_space(action_mode: str, min_bit: int, max_bit: int) -> spaces.Space:
    """``Box(0, 1, (1,))`` for ``"continuous"``, ``Discrete(max_bit - min_bit + 1)`` for ``"discrete"``."""
    if action_mode not in ACTION_MODES:
        raise ValueError(f"unknown action_mode {action_mode!r}; expected one of {', '.join(ACTION_MODES)}")
    if action_mode == "continuous":
        return spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32)
    return spaces.Discrete(max_bit - min_bit + 1)


def _single_element(action: Any) -> Any:
    """The one value of a scalar or one-element array action; ``None`` for anything with another size."""
    if isinstance(action, np.ndarray):
        return action.reshape(-1)[0].item() if action.size == 1 and action.dtype.kind in "iuf" else None
    if isinstance(action, (list, tuple)):
        return (
            _single_element(np.asarray(action)) if len(action) == 1 and not isinstance(action[0], (str, bool)) else None
        )
    return action


class PolicyDecisionEnv(gym.Env):
    """Steps through the free entries of a mixed-precision policy; the last step ends the episode.

    Subclasses call :meth:`_init_problem` with their :class:`~haq_gym.problem.PolicyProblem`,
    set ``action_mode``, ``action_space``, ``observation_space`` and ``render_mode``, and
    implement :meth:`_observation`. The problem's decisions (free entries, layer by layer,
    weight before activation) are the steps of an episode.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi"], "render_fps": 4}

    problem: PolicyProblem
    action_mode: str

    def _init_problem(self, problem: PolicyProblem) -> None:
        self.problem = problem
        self._step = 0
        self._policy: list[list[int | None]] = []
        self._done = True

    # ----- the problem's pieces, as the env exposes them
    @property
    def setup(self) -> SearchSetup:
        """The built model, data, costs and evaluator of the problem."""
        return self.problem.setup

    @property
    def budget(self) -> Budget:
        return self.problem.budget

    @property
    def pinned(self) -> list[list[int | None]]:
        return self.problem.pinned

    @property
    def decisions(self) -> list[tuple[int, int]]:
        return self.problem.decisions

    @property
    def free(self) -> list[tuple[bool, bool]]:
        return self.problem.free

    @property
    def min_bit(self) -> int:
        return self.problem.min_bit

    @property
    def max_bit(self) -> int:
        return self.problem.max_bit

    @property
    def enforcement(self) -> str:
        return self.problem.config.enforcement

    @staticmethod
    def _fill(policy: list[list[int | None]], bits: int) -> list[list[int]]:
        return PolicyProblem.fill(policy, bits)

    def _check_render_mode(self, render_mode: str | None) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"unsupported render_mode {render_mode!r}; expected one of {self.metadata['render_modes']}"
            )

    # ----- Gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._policy = [list(p) for p in self.pinned]
        self._step = 0
        self._done = False
        return self._observation(previous_bits=None), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self._done:
            raise RuntimeError("the episode has ended; call reset() before step()")
        bits = self.action_to_bits(action)
        layer, j = self.decisions[self._step]
        self._policy[layer][j] = bits
        self._step += 1
        info: dict[str, Any] = {"layer": layer, "decision": "activation" if j else "weight", "bits": bits}
        if self._step < len(self.decisions):
            return self._observation(previous_bits=bits), 0.0, False, False, info
        self._done = True
        info.update(self._finish())
        return self._observation(previous_bits=bits), float(info["reward"]), True, False, info

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        rows = [
            f"{name:<28} w={w!s:>4} a={a!s:>4}"
            for name, (w, a) in zip(self.setup.layer_names, self._policy, strict=True)
        ]
        return "\n".join(rows)

    # ----- actions
    def action_to_bits(self, action: Any) -> int:
        """Bits for an action of this env's action space (HAQ's mapping in continuous mode).

        Continuous: ``round((max_bit - min_bit + 1) * a + min_bit - 0.5)`` (equal-width bins
        over [0, 1]), clipped to ``[min_bit, max_bit]``. Discrete: ``min_bit + k``.
        Anything else (floats such as 2.7, strings, booleans, None, NaN, several elements) is
        refused with a ``ValueError`` saying what this action space takes.
        """
        if self.action_mode == "discrete":
            n = self.action_space.n
            k = _single_element(action)
            if not (isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_)) and 0 <= k < n):
                raise ValueError(f"discrete action must be one integer in 0..{n - 1}, got {action!r}")
            return self.min_bit + int(k)
        a = _single_element(action)
        if not (
            isinstance(a, (int, float, np.integer, np.floating))
            and not isinstance(a, (bool, np.bool_))
            and np.isfinite(a)
        ):
            raise ValueError(
                f"continuous action must be one finite number in [0, 1] (a float or a 1-element array), got {action!r}"
            )
        a = min(max(float(a), 0.0), 1.0)
        b = int(np.round((self.max_bit - self.min_bit + 1) * a + self.min_bit - 0.5))
        return min(max(b, self.min_bit), self.max_bit)

    def bits_to_action(self, bits: int) -> np.ndarray | int:
        """An action of this env's action space that maps to ``bits`` (the centre of its bin)."""
        if not self.min_bit <= bits <= self.max_bit:
            raise ValueError(f"bits must be in {self.min_bit}..{self.max_bit}, got {bits}")
        if self.action_mode == "discrete":
            return bits - self.min_bit
        return np.array([(bits - self.min_bit + 0.5) / (self.max_bit - self.min_bit + 1)], dtype=np.float32)

    def action_masks(self) -> np.ndarray:
        """Which bit choices of the current decision keep every budget reachable.

        Entry ``k`` (bits ``min_bit + k``) is True when the policy so far, this choice, and
        every later decision at ``min_bit`` still meets the budgets; so an agent that only
        picks allowed actions (sb3-contrib's MaskablePPO) never needs the enforcement wall.
        The minimum bit width is always allowed (the env rejects impossible budgets).
        """
        n = self.max_bit - self.min_bit + 1
        mask = np.ones(n, dtype=bool)
        if self._done:
            return mask
        layer, j = self.decisions[self._step]
        trial = self._fill(self._policy, self.min_bit)
        for k in range(1, n):
            trial[layer][j] = self.min_bit + k
            mask[k] = self.problem.meets_budget(trial)
        return mask

    # ----- subclass hooks
    def _observation(self, previous_bits: int | None) -> np.ndarray:
        """The observation before the decision at ``self._step`` (``previous_bits``: the last decision's bits)."""
        raise NotImplementedError

    def _finish(self) -> dict[str, Any]:
        """Evaluate the episode's policy on the problem; the final ``info`` is the outcome's."""
        outcome = self.problem.evaluate(self._policy)
        self._policy = [list(p) for p in outcome.policy]
        return outcome.info()

    def policy_file(self, info: dict[str, Any], found_by: dict[str, Any] | None = None) -> PolicyFile:
        """The final ``info`` of an episode as a :class:`~haq_gym.policy.PolicyFile`."""
        return self.problem.policy_file(info, found_by)
