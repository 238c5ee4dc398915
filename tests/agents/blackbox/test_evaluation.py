"""EvaluationBudget and the cost helpers: one full policy per evaluation, validated, never overspent."""

from __future__ import annotations

import contextlib
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from agents.blackbox import EvaluationBudget, meets_budget, policy_costs
from agents.blackbox.evaluation import ReplayMismatch
from agents.blackbox.greedy_sensitivity import run_greedy_sensitivity
from agents.blackbox.optuna_search import run_optuna
from agents.blackbox.uniform import run_uniform
from haq_gym.runs.checkpoint import SearchCheckpoint, SearchInterrupted, read_checkpoint_episodes


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


def _run_with_checkpoint(
    run,
    problem,
    run_dir: Path,
    episodes: int,
    hyperparams: dict | None = None,
    kill_at: int | None = None,
    history: list | None = None,
) -> tuple[list, SearchCheckpoint]:
    """Run ``run`` on ``problem`` with a checkpoint every 2 episodes into ``run_dir``; the outcomes the observers saw.

    ``kill_at``: raise KeyboardInterrupt (a kill) in the observer of that evaluation.
    ``history``: the recorded evaluations a resumed run replays.
    """
    seen: list[tuple] = []

    def observe(outcome) -> None:
        seen.append((outcome.policy, outcome.proposed, outcome.accuracy, outcome.reward))
        if len(seen) == kill_at:
            raise KeyboardInterrupt

    problem.add_observer(observe)
    run_dir.mkdir(exist_ok=True)
    checkpoint = SearchCheckpoint(run_dir, every=2)
    if history is not None:
        checkpoint.history = history[: checkpoint.episodes]
    with contextlib.suppress(KeyboardInterrupt):
        run(problem, episodes, 7, hyperparams or {}, run_dir, progress=False, checkpoint=checkpoint)
    return seen, checkpoint


RUNNERS = {
    "optuna-tpe": (partial(run_optuna, sampler="tpe"), {"n_startup_trials": 2}),
    "optuna-cmaes": (partial(run_optuna, sampler="cmaes"), {"n_startup_trials": 1, "population_size": 2}),
    "optuna-gp": (partial(run_optuna, sampler="gp"), {"n_startup_trials": 5}),  # a GP fit takes seconds
    "optuna-nsga2": (partial(run_optuna, sampler="nsga2"), {"population_size": 2}),
    "uniform": (run_uniform, {}),
    "greedy-sensitivity": (run_greedy_sensitivity, {}),
}


@pytest.mark.parametrize("name", list(RUNNERS))
def test_killed_black_box_search_resumes_to_the_same_evaluations(name: str, make_problem, tmp_path: Path) -> None:
    """Killed in episode 5 (checkpoint at 4), resumed on a fresh problem: the replay rebuilds the strategy exactly."""
    run, hyperparams = RUNNERS[name]
    episodes = 6
    whole, _ = _run_with_checkpoint(run, make_problem(latency_budget=0.5), tmp_path / "whole", episodes, hyperparams)
    kill_at = min(5, len(whole))  # uniform and greedy may stop early
    killed, checkpoint = _run_with_checkpoint(
        run, make_problem(latency_budget=0.5), tmp_path / "killed", episodes, hyperparams, kill_at=kill_at
    )
    assert killed == whole[:kill_at] and checkpoint.episodes == (kill_at - 1) // 2 * 2 > 0
    recorded = [(policy, accuracy) for policy, _, accuracy, _ in killed]
    resumed, _ = _run_with_checkpoint(
        run, make_problem(latency_budget=0.5), tmp_path / "killed", episodes, hyperparams, history=recorded
    )
    assert whole[: checkpoint.episodes] + resumed == whole  # the replayed episodes are not evaluated again
    if name.startswith("optuna"):
        assert len({str(proposed) for _, proposed, _, _ in whole}) > 2  # the sampler moves (from its history)


def test_resume_refuses_a_record_the_strategy_does_not_retrace(make_problem, tmp_path: Path) -> None:
    seen, _ = _run_with_checkpoint(run_uniform, make_problem(latency_budget=0.5), tmp_path / "run", 3)
    wrong = [(policy, accuracy) for policy, _, accuracy, _ in seen]
    wrong[1] = (wrong[0][0], wrong[1][1])  # episode 2 recorded with episode 1's policy
    with pytest.raises(ReplayMismatch, match="does not retrace its record: episode 2 evaluates"):
        _run_with_checkpoint(run_uniform, make_problem(latency_budget=0.5), tmp_path / "run", 3, history=wrong)


def test_a_requested_stop_ends_a_black_box_search_after_a_checkpoint(make_problem, tmp_path: Path) -> None:
    """Ctrl-C (a requested stop) during an evaluation: the search stops once it ends, with a checkpoint there."""
    problem = make_problem(latency_budget=0.5)
    checkpoint = SearchCheckpoint(tmp_path, every=0)
    problem.add_observer(lambda outcome: checkpoint.request_stop())
    with pytest.raises(SearchInterrupted) as stop:
        run_optuna(problem, 4, 0, {}, tmp_path, progress=False, checkpoint=checkpoint, sampler="tpe")
    assert stop.value.episodes == 1 and read_checkpoint_episodes(tmp_path) == 1
