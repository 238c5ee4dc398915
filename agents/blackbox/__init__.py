"""Black-box search baselines: random, uniform precision, Optuna samplers and greedy sensitivity.

Every baseline proposes whole policies (one bit width per decision) and plays each one
through the env as an episode (:func:`agents.blackbox.play.play_policy`), so its
evaluations are counted and recorded exactly like an RL agent's. They map bits to actions
with ``bits_to_action`` and therefore drive either action mode.

``uniform`` and ``greedy-sensitivity`` know in advance how many evaluations they need
and stop early, possibly spending fewer than ``episodes``; the others spend exactly
``episodes``.
"""

from __future__ import annotations

from functools import partial

from agents.blackbox.greedy_sensitivity import HYPERPARAMS as GREEDY_HYPERPARAMS
from agents.blackbox.greedy_sensitivity import run_greedy_sensitivity
from agents.blackbox.optuna_search import run_optuna, sampler_hyperparams
from agents.blackbox.play import EvaluationBudget, full_policy, meets_budget, play_policy, policy_costs
from agents.blackbox.random_search import run_random_search
from agents.blackbox.uniform import feasible_uniform_bits, run_uniform
from agents.spec import AlgorithmSpec

ACTION_MODES = ("discrete", "continuous")

ALGORITHMS: dict[str, AlgorithmSpec] = {
    "random": AlgorithmSpec(run_random_search, ACTION_MODES, frozenset(),
                            "uniform-random bits per decision (numpy, seeded)"),
    "uniform": AlgorithmSpec(run_uniform, ACTION_MODES, frozenset(),
                             "every decision at one bit width: the feasible widths, highest first (stops early)"),
    "optuna-tpe": AlgorithmSpec(partial(run_optuna, sampler="tpe"), ACTION_MODES, sampler_hyperparams("tpe"),
                                "Optuna TPESampler over per-decision bits, maximising the reward"),
    "optuna-cmaes": AlgorithmSpec(partial(run_optuna, sampler="cmaes"), ACTION_MODES, sampler_hyperparams("cmaes"),
                                  "Optuna CmaEsSampler over per-decision bits, maximising the reward (needs cmaes)"),
    "optuna-gp": AlgorithmSpec(partial(run_optuna, sampler="gp"), ACTION_MODES, sampler_hyperparams("gp"),
                               "Optuna GPSampler (Bayesian optimisation) over per-decision bits, maximising reward"),
    "optuna-nsga2": AlgorithmSpec(partial(run_optuna, sampler="nsga2"), ACTION_MODES, sampler_hyperparams("nsga2"),
                                  "Optuna NSGAIISampler on (accuracy, latency, flash); writes pareto_front.csv/.png"),
    "greedy-sensitivity": AlgorithmSpec(run_greedy_sensitivity, ACTION_MODES, GREEDY_HYPERPARAMS,
                                        "AIMET/HAWQ-style probe-then-lower greedy (stops early)"),
}

__all__ = ["ALGORITHMS", "EvaluationBudget", "feasible_uniform_bits", "full_policy", "meets_budget", "play_policy",
           "policy_costs"]
