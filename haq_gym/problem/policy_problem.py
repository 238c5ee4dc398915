"""The search objective as one object: decisions, pinned layers, costs, budget and its wall, evaluator, reward.

Every path that evaluates a policy (an env episode's last step, a black-box strategy's
proposal) goes through :meth:`PolicyProblem.evaluate`, which tells the problem's observers
(the run recorder, tuning's pruning hook) about each :class:`~haq_gym.problem.Outcome`.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from haq_gym.cost import Budget, CostModel, Costs, LayerInfo, enforce_budget
from haq_gym.cost.enforcement import apply_pins
from haq_gym.evaluation import AccuracySettings
from haq_gym.policy import PolicyFile, now_iso
from haq_gym.problem.config import ProblemConfig
from haq_gym.problem.outcome import Outcome
from haq_gym.rewards import get_reward
from haq_gym.search_setup import SearchSetup, build_search_setup

Observer = Callable[[Outcome], None]
"""Called with every outcome, in the order observers were added; an exception stops the evaluating search."""


def haq_pins(n_layers: int) -> list[list[int | None]]:
    """HAQ's pins: first layer ``[8, -1]`` (its image input unquantized), last layer ``[8, 8]``."""
    pins: list[list[int | None]] = [[None, None] for _ in range(n_layers)]
    pins[0] = [8, -1]
    pins[-1] = [8, 8]
    return pins


def _check_setup_matches(setup: SearchSetup, config: ProblemConfig) -> None:
    """A prebuilt setup fixes how costs and accuracies are measured: refuse a config (or preset) that asks otherwise.

    An evaluator that does not say how it measures (a stand-in without ``accuracy``) counts as the default way.
    """
    acc = getattr(setup.evaluator, "accuracy", None)
    if not isinstance(acc, AccuracySettings):  # a stand-in evaluator may use the name for something else
        acc = AccuracySettings()
    built = {
        "unquantized_cost": setup.cost_model.unquantized_cost,
        "reward_accuracy": acc.source,
        "use_top5": acc.top5,
        "calibration": acc.calibration,
    }
    for key, value in built.items():
        asked = getattr(config, key)
        if asked != value:
            raise ValueError(
                f"the prebuilt setup measures {key}={value!r}, but this problem asks {key}={asked!r}; "
                "build the setup with the same keywords"
            )


class PolicyProblem:
    """HAQ's linear mixed-precision problem: ``[[w_bit, a_bit], ...]`` per quantizable layer, under budgets.

    Built from a :class:`ProblemConfig`; ``setup`` is a prebuilt
    :class:`~haq_gym.search_setup.SearchSetup` (problems can share one model and its
    evaluation cache), otherwise built from the config. The first layer's input is the
    image and never quantized (``a_bit = -1``); with ``pin_first_last`` the first layer's
    weights and the last layer are pinned at 8 bits. The other entries are the
    :attr:`decisions`, ``(layer, 0 = weight / 1 = activation)``, in layer order. With
    ``pin_first_last="wall"`` (HAQ) every entry is a decision and :attr:`wall_pins` are
    written only when the budget wall runs, so a policy that meets the budget keeps its own
    first and last bits.
    """

    def __init__(self, config: ProblemConfig, setup: SearchSetup | None = None) -> None:
        self.config = config
        self.reward_fn = get_reward(config.reward)
        self.budget = Budget(latency=config.latency_budget, flash=config.flash_budget)
        if setup is not None:
            _check_setup_matches(setup, config)
        self.setup = self._adapt(setup or build_search_setup(**config.setup_kwargs()))
        self.pinned = self._pinned_policy(len(self.setup.layers))
        self.wall_pins = haq_pins(len(self.setup.layers)) if config.pin_first_last == "wall" else None
        self.decisions = [(i, j) for i, pair in enumerate(self.pinned) for j in (0, 1) if pair[j] is None]
        self.free = [(pair[0] is None, pair[1] is None) for pair in self.pinned]
        cheapest = self.fill(self.pinned, self.min_bit)
        self.budget.check_feasible(
            self.cost_model, cheapest if self.wall_pins is None else apply_pins(cheapest, self.wall_pins)
        )
        self._observers: list[Observer] = []

    # ----- construction hooks (the k-means flow overrides them)
    def _adapt(self, setup: SearchSetup) -> SearchSetup:
        """The setup this problem evaluates with (the linear flow uses it as built)."""
        return setup

    def _pinned_policy(self, n: int) -> list[list[int | None]]:
        """Per layer, the fixed bits or ``None`` where a strategy decides (everything with ``"wall"``, as in HAQ)."""
        pinned: list[list[int | None]] = [[None, None] for _ in range(n)]
        if self.config.pin_first_last == "wall":
            return pinned
        pinned[0][1] = -1
        if self.config.pin_first_last:
            pinned[0][0] = 8
            pinned[-1] = [8, 8]
        return pinned

    # ----- what the problem is made of
    @property
    def min_bit(self) -> int:
        return self.config.min_bit

    @property
    def max_bit(self) -> int:
        return self.config.max_bit

    @property
    def cost_model(self) -> CostModel:
        return self.setup.cost_model

    @property
    def layer_names(self) -> list[str]:
        return self.setup.layer_names

    @property
    def layer_infos(self) -> list[LayerInfo]:
        return self.setup.layer_infos

    @property
    def reference_accuracy(self) -> float:
        return self.setup.reference_accuracy

    @staticmethod
    def fill(policy: Sequence[Sequence[int | None]], bits: int) -> list[list[int]]:
        """``policy`` with every undecided (``None``) entry set to ``bits``."""
        return [[bits if b is None else b for b in pair] for pair in policy]

    # ----- policies and their costs (no evaluation)
    def policy_from_decisions(self, decision_bits: Sequence[int]) -> list[list[int]]:
        """The ``[[w_bit, a_bit], ...]`` policy of one bit width per decision, pinned bits filled in.

        Raises ``ValueError`` unless there is one integer in ``min_bit..max_bit`` per decision.
        """
        n = len(self.decisions)
        if len(decision_bits) != n:
            raise ValueError(f"expected {n} bit widths (one per decision of the problem), got {len(decision_bits)}")
        policy = [list(p) for p in self.pinned]
        for i, ((layer, j), b) in enumerate(zip(self.decisions, decision_bits, strict=True)):
            try:
                bits = operator.index(b)
            except TypeError:
                raise ValueError(f"bit widths must be integers; decision {i} has {b!r}") from None
            if not self.min_bit <= bits <= self.max_bit:
                raise ValueError(
                    f"bit widths must be in {self.min_bit}..{self.max_bit} (min_bit..max_bit); "
                    f"decision {i} {(layer, j)} has {bits}"
                )
            policy[layer][j] = bits
        return cast(list[list[int]], policy)  # every None of the pins is a decision, now filled

    def costs(self, policy: Sequence[Sequence[int]]) -> Costs:
        """The cost model's figures for ``policy`` (no evaluation, no enforcement)."""
        return self.cost_model.costs(policy)

    def meets_budget(self, policy: Sequence[Sequence[int]]) -> bool:
        """Whether ``policy`` meets the budgets as it is, so the wall leaves it alone."""
        return self.budget.satisfied(self.costs(policy))

    # ----- evaluation
    def add_observer(self, observer: Observer) -> None:
        """Call ``observer(outcome)`` after every evaluation from now on."""
        self._observers.append(observer)

    def remove_observer(self, observer: Observer) -> None:
        """Stop calling ``observer`` (no error if it was not added)."""
        if observer in self._observers:
            self._observers.remove(observer)

    def evaluate(self, policy: Sequence[Sequence[int]]) -> Outcome:
        """Make ``policy`` fit the budget, evaluate it, reward it; tell the observers; return the outcome."""
        proposed = self._checked(policy)
        start = time.perf_counter()
        enforced = self._enforced(proposed)
        result = self.setup.evaluator.evaluate(enforced)
        outcome = self._outcome(proposed, enforced, result.accuracy, result.cached, start)
        for observer in list(self._observers):
            observer(outcome)
        return outcome

    def recorded(self, policy: Sequence[Sequence[int]], accuracy: float) -> Outcome:
        """The outcome an earlier evaluation of ``policy`` gave, rebuilt from its measured ``accuracy``.

        Nothing is evaluated and no observer is told: a resumed search replays its recorded
        episodes through this, so its strategy sees exactly what it saw before the kill.
        ``accuracy`` is that of the policy after the wall (as ``episodes.csv`` records it).
        """
        proposed = self._checked(policy)
        start = time.perf_counter()
        return self._outcome(proposed, self._enforced(proposed), accuracy, True, start)

    def _enforced(self, proposed: list[list[int]]) -> list[list[int]]:
        """``proposed`` after the enforcement wall (a copy; unchanged when it meets the budget)."""
        return enforce_budget(
            self.config.enforcement,
            [list(p) for p in proposed],
            self.free,
            self.cost_model,
            self.budget,
            self.min_bit,
            pins=self.wall_pins,
        )

    def _outcome(
        self, proposed: list[list[int]], enforced: list[list[int]], accuracy: float, cached: bool, start: float
    ) -> Outcome:
        """The :class:`Outcome` of ``enforced`` measured at ``accuracy`` (costs, reward and extras computed here)."""
        costs = self.costs(enforced)
        reward = self.reward_fn(accuracy, self.reference_accuracy, costs, self.cost_model)
        extras = self._extras(enforced, costs)
        return Outcome(
            policy=[list(p) for p in enforced],
            proposed=proposed,
            accuracy=accuracy,
            reference_accuracy=self.reference_accuracy,
            costs=costs,
            reward=reward,
            budget_met=self.budget.satisfied(costs),
            cached=cached,
            eval_time_s=time.perf_counter() - start,
            extras=extras,
        )

    def _checked(self, policy: Sequence[Sequence[int]]) -> list[list[int]]:
        """A copy of ``policy`` after checking it has this problem's shape, pinned bits and bit range."""
        if len(policy) != len(self.pinned):
            raise ValueError(f"expected a policy of {len(self.pinned)} [w_bit, a_bit] pairs, got {len(policy)}")
        out = []
        for i, (pair, pinned) in enumerate(zip(policy, self.pinned, strict=True)):
            pair = [int(b) for b in pair]
            for j, (b, p) in enumerate(zip(pair, pinned, strict=True)):
                if p is not None and b != p:
                    raise ValueError(f"layer {i} {'activation' if j else 'weight'} is pinned at {p}, got {b}")
                if p is None and not self.min_bit <= b <= self.max_bit:
                    raise ValueError(
                        f"layer {i} {'activation' if j else 'weight'} bits must be in "
                        f"{self.min_bit}..{self.max_bit}, got {b}"
                    )
            out.append(pair)
        return out

    def _extras(self, policy: list[list[int]], costs: Costs) -> dict[str, float]:
        """Figures particular to this flow, measured inside the evaluation time (none for the linear flow)."""
        return {}

    # ----- artifacts
    def policy_file(self, result: Outcome | Mapping[str, Any], found_by: dict[str, Any] | None = None) -> PolicyFile:
        """An outcome (or an env episode's final ``info``) as a :class:`~haq_gym.policy.PolicyFile`."""
        info = result.info() if isinstance(result, Outcome) else result
        s, c = self.setup, self.config
        return PolicyFile(
            model=s.model_name,
            dataset=s.dataset,
            layer_names=list(s.layer_names),
            bits=[[int(w), int(a)] for w, a in info["policy"]],
            costs=self._file_costs(info),
            accuracy={
                "search_val_top1": float(info["accuracy"]),
                "float_search_val_top1": float(info["reference_accuracy"]),
            },
            budget={
                **self._file_budget(),
                "min_bit": c.min_bit,
                "max_bit": c.max_bit,
                "enforcement": c.enforcement,
                "budget_met": bool(info["budget_met"]),
            },
            found_by={
                "reward": float(info["reward"]),
                **self._file_settings(),
                "created": now_iso(),
                **(found_by or {}),
            },
            model_kwargs=s.policy_model_kwargs(),
        )

    def _file_costs(self, info: Mapping[str, Any]) -> dict[str, float]:
        """The policy file's ``costs``: the outcome's cost ratios."""
        return {k: float(info[k]) for k in ("latency_ratio", "flash_ratio", "bitops_ratio")}

    def _file_budget(self) -> dict[str, Any]:
        """The policy file's ``budget`` before the bit range: the budgets and their reference precision."""
        return {**self.budget.to_dict(), "float_bit": self.config.float_bit}

    def _file_settings(self) -> dict[str, Any]:
        """What the policy file's ``found_by`` says of this problem: reward, checkpoint, latency source."""
        s, c = self.setup, self.config
        return {
            "reward_strategy": c.reward,
            "reward_accuracy": f"{c.reward_accuracy}, {'top-5' if c.use_top5 else 'top-1'}",
            "preset": c.preset,
            "checkpoint": s.checkpoint,
            "latency_table": s.latency_source,
        }


def build_problem(config: ProblemConfig, setup: SearchSetup | None = None) -> PolicyProblem:
    """The problem of ``config``: :class:`~haq_gym.problem.KMeansProblem` for ``quantizer="kmeans"``, else linear."""
    if config.is_kmeans:
        from haq_gym.problem.kmeans_problem import KMeansProblem

        return KMeansProblem(config, setup)
    return PolicyProblem(config, setup)
