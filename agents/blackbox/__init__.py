"""Black-box search baselines: random, uniform precision, Optuna samplers and greedy sensitivity.

Every baseline proposes whole policies (one bit width per decision) and evaluates each one
directly on the policy problem (:class:`agents.blackbox.evaluation.EvaluationBudget`); the
problem's observers count and record every evaluation exactly like an RL agent's episode.
The runners take the :class:`~haq_gym.problem.PolicyProblem`, not an env, so the env's
action mode does not matter to them.

Every baseline resumes (``train_agent.py --resume``): random search checkpoints its
generator, the others replay their recorded outcomes (:class:`EvaluationBudget`).

``uniform`` and ``greedy-sensitivity`` know in advance how many evaluations they need
and stop early, possibly spending fewer than ``episodes``; the others spend exactly
``episodes``.
"""

from __future__ import annotations

from functools import partial

from agents.blackbox.evaluation import EvaluationBudget, meets_budget, policy_costs
from agents.blackbox.greedy_sensitivity import HYPERPARAMS as GREEDY_HYPERPARAMS
from agents.blackbox.greedy_sensitivity import run_greedy_sensitivity
from agents.blackbox.optuna_search import run_optuna, sampler_hyperparams
from agents.blackbox.random_search import run_random_search
from agents.blackbox.uniform import feasible_uniform_bits, run_uniform
from agents.spec import PROBLEM, AlgorithmSpec

ACTION_MODES = ("discrete", "continuous")

ALGORITHMS: dict[str, AlgorithmSpec] = {
    "random": AlgorithmSpec(
        run_random_search,
        ACTION_MODES,
        frozenset(),
        "uniform-random bits per decision (numpy, seeded)",
        PROBLEM,
        resumable=True,
    ),
    "uniform": AlgorithmSpec(
        run_uniform,
        ACTION_MODES,
        frozenset(),
        "every decision at one bit width: the feasible widths, highest first (stops early)",
        PROBLEM,
        resumable=True,
    ),
    "optuna-tpe": AlgorithmSpec(
        partial(run_optuna, sampler="tpe"),
        ACTION_MODES,
        sampler_hyperparams("tpe"),
        "Optuna TPESampler over per-decision bits, maximising the reward",
        PROBLEM,
        resumable=True,
    ),
    "optuna-cmaes": AlgorithmSpec(
        partial(run_optuna, sampler="cmaes"),
        ACTION_MODES,
        sampler_hyperparams("cmaes"),
        "Optuna CmaEsSampler over per-decision bits, maximising the reward (needs cmaes)",
        PROBLEM,
        resumable=True,
    ),
    "optuna-gp": AlgorithmSpec(
        partial(run_optuna, sampler="gp"),
        ACTION_MODES,
        sampler_hyperparams("gp"),
        "Optuna GPSampler (Bayesian optimisation) over per-decision bits, maximising reward",
        PROBLEM,
        resumable=True,
    ),
    "optuna-nsga2": AlgorithmSpec(
        partial(run_optuna, sampler="nsga2"),
        ACTION_MODES,
        sampler_hyperparams("nsga2"),
        "Optuna NSGAIISampler on (accuracy, latency, flash); writes pareto_front.csv/.png",
        PROBLEM,
        resumable=True,
    ),
    "greedy-sensitivity": AlgorithmSpec(
        run_greedy_sensitivity,
        ACTION_MODES,
        GREEDY_HYPERPARAMS,
        "AIMET/HAWQ-style probe-then-lower greedy (stops early)",
        PROBLEM,
        resumable=True,
    ),
}

__all__ = ["ALGORITHMS", "EvaluationBudget", "feasible_uniform_bits", "meets_budget", "policy_costs"]
