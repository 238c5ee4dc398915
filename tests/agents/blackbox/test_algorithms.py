"""Every black-box baseline end to end through a RunRecorder, plus each one's own promise."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import pytest
import yaml

from agents.blackbox import ALGORITHMS, feasible_uniform_bits
from haq_gym.policy import PolicyFile
from haq_gym.problem import Outcome, PolicyProblem, ProblemConfig
from haq_gym.runs import RunRecorder

CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs"

# (algorithm, episodes, hyperparams): tiny budgets that still reach each sampler's model.
CASES = [
    pytest.param("random", 3, {}, id="random"),
    pytest.param("uniform", 4, {}, id="uniform"),
    pytest.param("optuna-tpe", 4, {"n_startup_trials": 2}, id="optuna-tpe"),
    pytest.param(
        "optuna-cmaes",
        4,
        {"n_startup_trials": 1, "population_size": 4, "with_margin": True},
        id="optuna-cmaes",
        marks=pytest.mark.filterwarnings("ignore:Argument ``with_margin``"),
    ),
    pytest.param(
        "optuna-gp",
        3,
        {"n_startup_trials": 2, "deterministic_objective": True},
        id="optuna-gp",
        marks=pytest.mark.filterwarnings("ignore:Argument ``deterministic_objective``"),
    ),
    pytest.param("optuna-nsga2", 4, {"population_size": 2, "start_from_uniform": True}, id="optuna-nsga2"),
    pytest.param("greedy-sensitivity", 4, {}, id="greedy-sensitivity"),
]
EXACT = {"random", "optuna-tpe", "optuna-cmaes", "optuna-gp", "optuna-nsga2"}


def run_algo(recorder: RunRecorder, algo: str, episodes: int, seed: int = 0, hyperparams: dict | None = None) -> None:
    """Call the runner the way run_search does (the problem, keywords), then close the recorder."""
    try:
        ALGORITHMS[algo].runner(
            recorder.problem,
            episodes=episodes,
            seed=seed,
            hyperparams=dict(hyperparams or {}),
            run_dir=recorder.run_dir,
            progress=False,
            writer=None,
        )
    finally:
        recorder.close()


def episode_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "episodes.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_registry_entries() -> None:
    assert set(ALGORITHMS) == {
        "random",
        "uniform",
        "optuna-tpe",
        "optuna-cmaes",
        "optuna-gp",
        "optuna-nsga2",
        "greedy-sensitivity",
    }
    assert {c.values[0] for c in CASES} == set(ALGORITHMS)
    for spec in ALGORITHMS.values():
        assert set(spec.action_modes) == {"discrete", "continuous"} and spec.description
        assert spec.drives == "problem"


@pytest.mark.parametrize("algo, episodes, hyperparams", CASES)
def test_runs_end_to_end_within_its_budget(
    make_recorded, tmp_path: Path, algo: str, episodes: int, hyperparams: dict
) -> None:
    assert set(hyperparams) <= ALGORITHMS[algo].hyperparams
    recorder = make_recorded(tmp_path / algo)
    run_algo(recorder, algo, episodes, hyperparams=hyperparams)
    rows = episode_rows(recorder.run_dir)
    assert (len(rows) == episodes) if algo in EXACT else (1 <= len(rows) <= episodes)
    best = PolicyFile.load(recorder.run_dir / "best_policy.json")
    assert best.budget["budget_met"] is True
    assert best.found_by["reward"] == pytest.approx(
        max(float(r["reward"]) for r in rows if r["budget_met"] == "1"), abs=1e-6
    )


def test_real_evaluator_end_to_end_with_tensorboard(real_setup, tmp_path: Path) -> None:
    """One run on the real quantized-model evaluation (slow), with the recorder's default TensorBoard output."""
    recorder = RunRecorder(PolicyProblem(ProblemConfig(), real_setup), tmp_path)
    run_algo(recorder, "random", 2, seed=3)
    rows = episode_rows(tmp_path)
    assert len(rows) == 2 and all(r["budget_met"] == "1" for r in rows)
    assert PolicyFile.load(tmp_path / "best_policy.json").budget["budget_met"] is True
    assert any((tmp_path / "tensorboard").iterdir())


@pytest.mark.parametrize("algo, hyperparams", [("random", {}), ("optuna-tpe", {"n_startup_trials": 2})])
def test_same_seed_same_evaluated_policies(make_recorded, tmp_path: Path, algo: str, hyperparams: dict) -> None:
    sequences = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        recorder = make_recorded(tmp_path / name)
        proposed: list[list[list[int]]] = []

        def remember(outcome: Outcome, _proposed=proposed) -> None:
            _proposed.append(outcome.proposed)  # the strategy's own choice, before enforcement

        recorder.problem.add_observer(remember)
        run_algo(recorder, algo, 5, seed=seed, hyperparams=hyperparams)
        sequences[name] = (proposed, [(r["w_bits"], r["a_bits"]) for r in episode_rows(tmp_path / name)])
    assert len(sequences["a"][0]) == 5
    assert sequences["a"] == sequences["b"]
    assert sequences["a"][0] != sequences["c"][0]


def test_nsga2_writes_a_mutually_non_dominated_pareto_front(make_recorded, tmp_path: Path) -> None:
    recorder = make_recorded(tmp_path)
    run_algo(recorder, "optuna-nsga2", 8, hyperparams={"population_size": 2})
    with open(tmp_path / "pareto_front.csv", newline="") as fh:
        front = list(csv.DictReader(fh))
    assert front and list(front[0]) == ["trial", "accuracy", "latency_ratio", "flash_ratio", "reward"]
    assert (tmp_path / "pareto_front.png").stat().st_size > 0

    def objectives(row: dict[str, str]) -> tuple[float, float, float]:
        """Higher is better in every component."""
        return float(row["accuracy"]), -float(row["latency_ratio"]), -float(row["flash_ratio"])

    def dominates(p: tuple, q: tuple) -> bool:
        return all(a >= b for a, b in zip(p, q, strict=True)) and any(a > b for a, b in zip(p, q, strict=True))

    points = [objectives(r) for r in front]
    for p, q in itertools.permutations(points, 2):
        assert not dominates(p, q)
    # The front is the whole front: every other trial (trial i is episode i + 1) is dominated by it.
    episodes = episode_rows(tmp_path)
    on_front = {int(r["trial"]) for r in front}
    assert on_front <= set(range(len(episodes)))
    for i, row in enumerate(episodes):
        if i not in on_front:
            assert any(dominates(p, objectives(row)) or p == objectives(row) for p in points)


@pytest.mark.parametrize(
    "budget, expected",
    [
        ({}, 4),
        ({"latency_budget": 0.35}, 3),
        ({"latency_budget": None, "flash_budget": 0.45}, 3),
        ({"latency_budget": 1.0}, 8),
    ],
)
def test_uniform_picks_the_highest_feasible_width(
    make_problem, make_recorded, tmp_path: Path, budget: dict, expected: int
) -> None:
    problem = make_problem(**budget)
    feasible = [
        b
        for b in range(problem.min_bit, problem.max_bit + 1)
        if problem.budget.satisfied(problem.cost_model.costs(problem.fill(problem.pinned, b)))
    ]
    assert max(feasible) == expected
    assert feasible_uniform_bits(problem) == sorted(feasible, reverse=True)

    recorder = make_recorded(tmp_path, **budget)
    run_algo(recorder, "uniform", 100)
    rows = episode_rows(tmp_path)
    assert len(rows) == len(feasible)  # stops early: one evaluation per feasible width, highest first
    n_layers = len(problem.pinned)
    evaluated = [[int(b) for b in r["w_bits"].split()][1:-1] for r in rows]
    assert evaluated == [[b] * (n_layers - 2) for b in sorted(feasible, reverse=True)]
    assert all(r["budget_met"] == "1" for r in rows)
    best = PolicyFile.load(tmp_path / "best_policy.json")  # the fake accuracy rises with bits
    assert [w for w, _ in best.bits][1:-1] == [expected] * (n_layers - 2)


def test_greedy_sensitivity_probes_then_lowers_the_least_sensitive(make_recorded, tmp_path: Path) -> None:
    recorder = make_recorded(tmp_path)
    problem = recorder.problem
    outcomes: list[Outcome] = []
    problem.add_observer(outcomes.append)
    n = len(problem.decisions)
    run_algo(recorder, "greedy-sensitivity", 1000)
    assert len(episode_rows(tmp_path)) == n + 1
    with open(tmp_path / "sensitivity.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == n and all(r["probed"] == "1" and r["probe_enforced"] == "0" for r in table)
    assert {r["probe_bits"] for r in table} == {"3"}  # min_bit + 2 = 4 is the feasible uniform width: probe below it
    # The fake evaluator's drop for a probe is proportional to the decision's weight: least sensitive first.
    weights = problem.setup.evaluator.weights
    order = sorted(table, key=lambda r: int(r["lowering_order"]))
    ranked = [weights[int(r["layer"]), 1 if r["kind"] == "activation" else 0] for r in order]
    assert ranked == sorted(ranked)
    final = [int(r["final_bits"]) for r in table]
    best_rows = episode_rows(tmp_path)[-1]
    assert best_rows["budget_met"] == "1"
    last = outcomes[-1].policy
    assert [int(b) for b in best_rows["w_bits"].split()] == [w for w, _ in last]
    assert [last[layer][j] for layer, j in problem.decisions] == final  # evaluated as planned: not enforced
    # the least sensitive decision went lowest, the most sensitive stayed highest
    assert final[int(order[0]["decision"])] <= final[int(order[-1]["decision"])]


def test_greedy_sensitivity_with_a_small_budget_probes_the_largest_savings(make_recorded, tmp_path: Path) -> None:
    recorder = make_recorded(tmp_path)
    run_algo(recorder, "greedy-sensitivity", 4, hyperparams={"probe_bits": 2})
    assert len(episode_rows(tmp_path)) == 4
    with open(tmp_path / "sensitivity.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    probed = [r for r in table if r["probed"] == "1"]
    savings = sorted((float(r["cost_saving"]) for r in table), reverse=True)
    assert len(probed) == 3 and sorted(float(r["cost_saving"]) for r in probed) == sorted(savings[:3])
    assert {r["probe_bits"] for r in probed} == {"2"}
    # unprobed decisions are the most sensitive: lowered after every probed one
    assert max(int(r["lowering_order"]) for r in probed) == 2
    assert PolicyFile.load(tmp_path / "best_policy.json").budget["budget_met"] is True


def test_greedy_sensitivity_spends_one_evaluation_when_max_bits_fit(make_recorded, tmp_path: Path) -> None:
    recorder = make_recorded(tmp_path, latency_budget=1.0)
    run_algo(recorder, "greedy-sensitivity", 50)
    rows = episode_rows(tmp_path)
    assert len(rows) == 1 and set(rows[0]["w_bits"].split()[1:-1]) == {"8"}


def test_bad_hyperparameters_are_rejected(make_recorded, tmp_path: Path) -> None:
    cases = [
        ("optuna-tpe", {"population_size": 4}, "optuna-tpe does not take hyperparameter.*population_size"),
        ("random", {"seed": 1}, "random does not take hyperparameter.*it takes none"),
        ("greedy-sensitivity", {"probe_bits": 8}, r"probe_bits must be in 2\.\.7"),
        ("greedy-sensitivity", {"probe_bits": 1}, r"probe_bits must be in 2\.\.7"),
    ]
    for k, (algo, hyperparams, message) in enumerate(cases):
        recorder = make_recorded(tmp_path / str(k))
        with pytest.raises(ValueError, match=message):
            run_algo(recorder, algo, 2, hyperparams=hyperparams)
        assert episode_rows(tmp_path / str(k)) == []


def test_configs_follow_the_zoo_convention() -> None:
    for algo, spec in ALGORITHMS.items():
        with open(CONFIG_DIR / f"{algo}.yml") as fh:
            table = yaml.safe_load(fh)
        assert {"default", "HAQ-MobileNetV2-v0"} <= set(table), algo
        assert table["HAQ-MobileNetV2-v0"]["n_episodes"] == 120, algo
        for entry in table.values():
            assert int(entry["n_episodes"]) >= 1
            assert set(entry) - {"n_episodes"} <= spec.hyperparams, algo
