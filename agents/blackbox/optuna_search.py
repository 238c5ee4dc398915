"""Optuna's samplers as bit-width searches: one integer parameter per decision, one trial per episode.

Each trial suggests ``d{i} in min_bit..max_bit`` for every decision ``i`` of the policy
problem and evaluates the policy on it (:class:`~agents.blackbox.evaluation.EvaluationBudget`),
so trials are episodes: counted and recorded like an RL agent's. Single-objective
samplers (``tpe``, ``cmaes``, ``gp``, ``random``) maximise the problem's reward.
``nsga2`` runs a multi-objective study (maximise accuracy, minimise latency ratio,
minimise flash ratio) and writes its Pareto front to ``run_dir/pareto_front.csv`` and
``run_dir/pareto_front.png``.

The objective values are those of the *enforced* policy the problem evaluated, but Optuna
attributes them to the suggested bits (a trial's parameters cannot be rewritten): for an
over-budget suggestion the sampler learns "these bits, after the wall, score this".
Each trial's user attributes hold the outcome (``reward``, ``accuracy``, ``latency_ratio``,
``flash_ratio``, ``budget_met``, ``enforced``).

Studies live in memory (a resumed run replays its record into a new one, see
:func:`run_optuna`). Optuna is imported lazily, so the other baselines work without it;
``cmaes`` also needs the ``cmaes`` package and ``gp`` needs torch.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.blackbox.evaluation import EvaluationBudget
from agents.blackbox.uniform import feasible_uniform_bits
from agents.optuna_samplers import build_sampler
from haq_gym.problem import PolicyProblem
from haq_gym.util import check_known_keys

if TYPE_CHECKING:
    import optuna

    from haq_gym.runs.checkpoint import SearchCheckpoint

# Hyperparameters each sampler takes; names are the samplers' own keywords, except that
# CMA-ES's ``popsize`` is exposed as ``population_size`` like NSGA-II's.
SAMPLER_HYPERPARAMS: dict[str, frozenset[str]] = {
    "tpe": frozenset({"n_startup_trials", "n_ei_candidates"}),
    "cmaes": frozenset({"n_startup_trials", "population_size", "sigma0", "with_margin"}),
    "gp": frozenset({"n_startup_trials", "deterministic_objective"}),
    "random": frozenset(),
    "nsga2": frozenset({"population_size", "mutation_prob", "crossover_prob", "swapping_prob"}),
}
# Taken by every sampler: enqueue the best feasible uniform policy as the first trial.
COMMON_HYPERPARAMS = frozenset({"start_from_uniform"})
MULTI_OBJECTIVE = frozenset({"nsga2"})
OBJECTIVES = ("accuracy", "latency_ratio", "flash_ratio")
DIRECTIONS = ("maximize", "minimize", "minimize")
PARETO_COLUMNS = ("trial", "accuracy", "latency_ratio", "flash_ratio", "reward")


def sampler_hyperparams(sampler: str) -> frozenset[str]:
    """Every hyperparameter the runner takes with ``sampler``."""
    if sampler not in SAMPLER_HYPERPARAMS:
        raise ValueError(f"unknown Optuna sampler {sampler!r}; expected one of {', '.join(SAMPLER_HYPERPARAMS)}")
    return SAMPLER_HYPERPARAMS[sampler] | COMMON_HYPERPARAMS


def run_optuna(
    problem: PolicyProblem,
    episodes: int,
    seed: int,
    hyperparams: dict[str, Any],
    run_dir: str | os.PathLike,
    progress: bool = True,
    writer: Any = None,
    checkpoint: SearchCheckpoint | None = None,
    *,
    sampler: str,
) -> None:
    """Search with Optuna's ``sampler`` for exactly ``episodes`` trials (= episodes).

    ``hyperparams`` are the sampler's (see :data:`SAMPLER_HYPERPARAMS`) plus
    ``start_from_uniform`` (default False): enqueue the highest feasible uniform policy
    (:mod:`agents.blackbox.uniform`) as trial 0, a warm start that costs one of the
    episodes. The sampler is seeded with ``seed``. Optuna's per-trial log lines are
    silenced for the run; a bar counts evaluations. ``writer`` is unused (the problem's
    recorder logs every evaluation).

    Resumable through ``checkpoint`` with no pickle: a seeded sampler's proposals are a
    function of its seed and of the trials it was told, so the resumed run builds the same
    sampler and a fresh study and replays the recorded trials through ask/tell
    (:class:`EvaluationBudget` answers them from the record), which leaves the sampler's
    RNG and the study exactly where the uninterrupted run had them.
    """
    import optuna

    check_known_keys(f"optuna-{sampler}", hyperparams, sampler_hyperparams(sampler))
    options = dict(hyperparams)
    start_from_uniform = bool(options.pop("start_from_uniform", False))
    built = build_sampler(sampler, seed, options)
    n = len(problem.decisions)
    multi = sampler in MULTI_OBJECTIVE
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = (
            optuna.create_study(sampler=built, directions=list(DIRECTIONS))
            if multi
            else optuna.create_study(sampler=built, direction="maximize")
        )
        if start_from_uniform:
            uniform = feasible_uniform_bits(problem)[0]
            study.enqueue_trial({f"d{i}": uniform for i in range(n)})
        with EvaluationBudget(problem, episodes, f"optuna-{sampler}", progress, checkpoint) as evaluate:
            for _ in range(episodes):
                trial = study.ask()
                outcome = evaluate([trial.suggest_int(f"d{i}", problem.min_bit, problem.max_bit) for i in range(n)])
                for key in ("reward", *OBJECTIVES):
                    trial.set_user_attr(key, float(getattr(outcome, key)))
                trial.set_user_attr("budget_met", bool(outcome.budget_met))
                trial.set_user_attr("enforced", outcome.enforced)
                study.tell(trial, [float(getattr(outcome, k)) for k in OBJECTIVES] if multi else float(outcome.reward))
    finally:
        optuna.logging.set_verbosity(verbosity)
    if multi:
        write_pareto_front(study, Path(run_dir), problem.budget.to_dict())


def write_pareto_front(study: optuna.Study, run_dir: Path, budgets: dict[str, float | None] | None = None) -> None:
    """``pareto_front.csv`` (the study's non-dominated trials, by latency) and ``pareto_front.png``."""
    from haq_gym.plots import plot_pareto_front

    front = sorted(study.best_trials, key=lambda t: (t.user_attrs["latency_ratio"], -t.user_attrs["accuracy"]))
    with open(run_dir / "pareto_front.csv", "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(PARETO_COLUMNS)
        for t in front:
            out.writerow([t.number, *(f"{t.user_attrs[k]:.6f}" for k in PARETO_COLUMNS[1:])])
    trials = [t.user_attrs for t in study.trials if t.values is not None]
    plot_pareto_front(trials, [t.user_attrs for t in front], run_dir / "pareto_front.png", budgets)
