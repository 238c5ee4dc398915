"""``train_agent.py --optimize`` in-process on the tiny problem: tuning, resuming, pruning, Ctrl-C, bad input."""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

import train_agent
from agents.optuna_samplers import build_sampler
from agents.tuning import optimize
from haq_gym.policy import PolicyFile

ENV_ID = "HAQ-MobileNetV2-v0"
DDPG_KNOBS = {"lr_actor", "lr_critic", "init_delta", "delta_decay", "rmsize", "tau"}  # warmup is fixed


def episode_rows(run_dir: Path) -> int:
    with open(run_dir / "episodes.csv", newline="") as fh:
        return len(list(csv.DictReader(fh)))


def test_tiny_tuning_run_writes_study_runs_and_outputs_then_resumes(tuning_args, load_study, tmp_path, capsys) -> None:
    out = tmp_path / "tune"
    assert train_agent.main(tuning_args(out, n_trials=2, n_seeds=2)) == 0
    trials = load_study(out / "study.log").get_trials()
    assert [(t.number, t.state) for t in trials] == [(0, TrialState.COMPLETE), (1, TrialState.COMPLETE)]
    for t in trials:
        bests = [
            PolicyFile.load(out / f"trial_{t.number}" / f"seed_{s}" / "best_policy.json").found_by["reward"]
            for s in (0, 1)
        ]
        assert t.value == pytest.approx(statistics.fmean(bests))
        # best-so-far reported after every evaluation, at step = evaluations spent by the trial (2 seeds x 2)
        assert sorted(t.intermediate_values) == [1, 2, 3, 4]
        assert t.intermediate_values[2] == pytest.approx(bests[0])
        assert t.intermediate_values[4] == pytest.approx(t.value)
        assert set(t.params) == DDPG_KNOBS and t.user_attrs["hyperparams"]["warmup"] == 1

    study = load_study(out / "study.log")
    best_file = yaml.safe_load((out / "best_hyperparams.yml").read_text())
    assert best_file == {ENV_ID: study.best_trial.user_attrs["hyperparams"]}  # no tuning budget in it
    again = train_agent.resolve_config(
        train_agent.build_parser().parse_args(["--algo", "haq-ddpg", "--config", str(out / "best_hyperparams.yml")])
    )
    search_budget = train_agent.algo_defaults("haq-ddpg", ENV_ID)["n_episodes"]
    assert again["hyperparams"] == study.best_trial.user_attrs["hyperparams"] and search_budget > 2
    assert again["n_episodes"] == search_budget  # a search as long as the config's, not one trial's 2 episodes
    with open(out / "trials.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["number"], r["state"]) for r in rows] == [("0", "COMPLETE"), ("1", "COMPLETE")]
    assert float(rows[1]["params_tau"]) == pytest.approx(trials[1].params["tau"])
    for name in ("optimization_history.png", "param_importances.png"):
        assert (out / name).stat().st_size > 1000, name

    # The same command with a larger target resumes the study: trials 0 and 1 stay as they were.
    assert train_agent.main(tuning_args(out, n_trials=3, n_seeds=2)) == 0
    resumed = load_study(out / "study.log").get_trials()
    assert [(t.number, t.state) for t in resumed] == [(n, TrialState.COMPLETE) for n in range(3)]
    assert [(t.params, t.value) for t in resumed[:2]] == [(t.params, t.value) for t in trials]
    assert episode_rows(out / "trial_2" / "seed_1") == 2

    # Another objective under the same study name is refused, and nothing changes.
    capsys.readouterr()
    assert train_agent.main(tuning_args(out, n_trials=4, n_seeds=2, episodes=3)) == 2
    err = capsys.readouterr().err
    assert "was created for another objective: n_episodes (study: 2, now: 3)" in err
    assert len(load_study(out / "study.log").get_trials()) == 3


def test_same_seed_same_tuning(tuning_args, load_study, tmp_path) -> None:
    """On CPU with one job, --seed repeats the sampled hyperparameters and the objective values."""
    a, b = tmp_path / "a", tmp_path / "b"
    assert train_agent.main(tuning_args(a, n_trials=2, episodes=1)) == 0
    assert train_agent.main(tuning_args(b, n_trials=2, episodes=1)) == 0
    trials_a, trials_b = (load_study(out / "study.log").get_trials() for out in (a, b))
    assert [(t.params, t.value) for t in trials_a] == [(t.params, t.value) for t in trials_b]
    assert trials_a[0].params != trials_a[1].params


def test_a_pruned_trial_stops_its_search_run(tiny_env_kwargs, tmp_path) -> None:
    base = train_agent.algo_defaults("haq-ddpg", ENV_ID)
    base.pop("n_episodes")
    settings = optimize.TuningSettings(
        algo="haq-ddpg",
        env_id=ENV_ID,
        env_kwargs={**tiny_env_kwargs, "action_mode": "continuous"},
        n_episodes=4,
        base_hyperparams=base,
        fixed_hyperparams={"warmup": 1, "batch_size": 16, "hidden1": 32, "hidden2": 32},
        output=str(tmp_path / "tune"),
        n_seeds=2,
        report_every=2,
    )
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=1e9))
    study.optimize(optimize.Objective(settings, *optimize._problem_and_setup(settings)), n_trials=1)
    trial = study.trials[0]
    assert trial.state == TrialState.PRUNED and list(trial.intermediate_values) == [2]
    assert episode_rows(tmp_path / "tune" / "trial_0" / "seed_0") == 2  # stopped after 2 of 4 evaluations
    assert not (tmp_path / "tune" / "trial_0" / "seed_1").exists()


def test_ctrl_c_fails_and_requeues_the_running_trial(tuning_args, load_study, tmp_path) -> None:
    out = tmp_path / "tune"
    args = tuning_args(out, n_trials=1, episodes=3)
    report = optimize.TrialProgress._on_episode

    def interrupted_at_second_episode(self, recorder) -> None:
        if recorder.episodes == 2:
            raise KeyboardInterrupt
        report(self, recorder)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(optimize.TrialProgress, "_on_episode", interrupted_at_second_episode)
        assert train_agent.main(args) == 130
    failed, queued = load_study(out / "study.log").get_trials()
    assert (failed.state, queued.state) == (TrialState.FAIL, TrialState.WAITING)
    assert queued.params == failed.params and queued.system_attrs["failed_trial"] == 0
    assert episode_rows(out / "trial_0" / "seed_0") == 2  # the interrupted run's folder is kept

    assert train_agent.main(args) == 0
    failed, retried = load_study(out / "study.log").get_trials()
    assert (failed.state, retried.state) == (TrialState.FAIL, TrialState.COMPLETE)
    assert retried.params == failed.params and episode_rows(out / "trial_1" / "seed_0") == 3


@pytest.mark.parametrize(
    "extra, message",
    [
        (("--sampler", "nope"), "unknown sampler 'nope'; expected one of tpe, random, cmaes, gp"),
        (("--pruner", "nope"), "unknown pruner 'nope'; expected one of median, halving, none"),
        (("--n-jobs", "0"), "--n-jobs must be at least 1, got 0"),
        (("--n-seeds", "0"), "--n-seeds must be at least 1, got 0"),
        (("--n-jobs", "4096"), "4096 workers need at least one CPU core each"),
        (("--n-jobs", "2", "--device", "cuda:7"), "--device: device 'cuda:7'"),
        (("--storage", "mysql://tuner@db/optuna"), "unsupported storage 'mysql://tuner@db/optuna': expected a journal"),
        (("--storage", "postgresql://tuner@127.0.0.1:1/optuna"), "cannot open storage 'postgresql://tuner@127.0.0.1:1"),
        (("--storage", "sqlite:///{tmp}/s.db", "--n-jobs", "2"), "SQLite storage takes one process at a time"),
        (("--algo", "random"), "random has no hyperparameters, so there is nothing to tune"),
    ],
)
def test_bad_tuning_input_is_one_clear_line_and_writes_nothing(extra, message, tuning_args, tmp_path, capsys) -> None:
    if "psycopg" not in __import__("sys").modules and any(e.startswith("postgresql") for e in extra):
        pytest.importorskip("psycopg")
    out = tmp_path / "tune"
    extra = tuple(e.replace("{tmp}", str(tmp_path)) for e in extra)
    assert train_agent.main(tuning_args(out, extra=extra)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not out.exists() and not (tmp_path / "s.db").exists()


def test_tuning_flags_need_optimize_and_a_foreign_folder_is_never_used(tuning_args, tmp_path, capsys) -> None:
    assert train_agent.main(["--episodes", "1", "--sampler", "tpe", "--n-trials", "3"]) == 2
    assert "--n-trials, --sampler only make sense with --optimize" in capsys.readouterr().err
    out = tmp_path / "taken"
    out.mkdir()
    (out / "episodes.csv").write_text("precious\n")
    assert train_agent.main(tuning_args(out)) == 2
    assert "exists and is not a tuning folder" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["episodes.csv"]


def test_samplers_and_pruners_by_name() -> None:
    assert isinstance(build_sampler("cmaes", 0), optuna.samplers.CmaEsSampler)
    assert isinstance(optimize.build_pruner("halving", 10), optuna.pruners.SuccessiveHalvingPruner)
    assert isinstance(optimize.build_pruner("none", 10), optuna.pruners.NopPruner)
    with pytest.raises(ValueError, match="unknown sampler 'skopt'; expected one of tpe, random, cmaes, gp"):
        build_sampler("skopt", 0)
