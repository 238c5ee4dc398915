"""A resumed benchmark reuses a finished run only if it was made with the same settings (issue 15, item 5)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from haq_gym.experiments.jobs import RunSettingsDiffer, check_reusable_run, run_settings_differences

CONFIG = {
    "algo": "random",
    "env": "HAQ-MobileNetV2-v0",
    "seed": 0,
    "n_episodes": 3,
    "env_kwargs": {"latency_budget": 0.5, "action_mode": "continuous"},
    "hyperparams": {},
}


def finished_run(tmp_path, **changes) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yml").write_text(yaml.safe_dump({**CONFIG, **changes, "command": "train_agent.py ..."}))
    return run


def test_same_settings_are_reused(tmp_path) -> None:
    check_reusable_run(finished_run(tmp_path), dict(CONFIG))


@pytest.mark.parametrize(
    "change,name",
    [
        ({"env_kwargs": {"latency_budget": 0.3, "action_mode": "continuous"}}, "env_kwargs"),  # relabelled 0.5 as 0.3
        ({"n_episodes": 10}, "n_episodes"),  # a 10-evaluation column from 3-evaluation runs
        ({"hyperparams": {"n_startup_trials": 2}}, "hyperparams"),
        ({"seed": 1}, "seed"),
    ],
)
def test_other_settings_are_refused(tmp_path, change, name) -> None:
    run = finished_run(tmp_path)
    with pytest.raises(RunSettingsDiffer, match=f"was run with other settings: {name} \\(run: "):
        check_reusable_run(run, {**CONFIG, **change})


def test_unreadable_config_is_a_difference(tmp_path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yml").write_text("algo: [unclosed")
    assert [d.split(" (")[0] for d in run_settings_differences(run, CONFIG)] == ["config.yml unreadable"]


def _search_strategies():
    import importlib.util

    path = Path(__file__).resolve().parents[3] / "benchmarks" / "search_strategies.py"
    spec = importlib.util.spec_from_file_location("search_strategies", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_search_strategies_resume_reuses_only_runs_made_with_the_same_settings(
    tiny_checkpoint, tmp_path, capsys
) -> None:
    """A real run, resumed: the settings the benchmark expects are the ones train_agent.py recorded."""
    bench = _search_strategies()
    out = tmp_path / "bench"
    common = [
        "--strategies",
        "random",
        "--seeds",
        "0",
        "--budgets",
        "2",
        "--no-progress",
        "--output",
        str(out),
        "--env-kwargs",
        "width_mult=0.35",
        f"checkpoint={tiny_checkpoint}",
        "val_size=64",
        "calibration_size=16",
    ]
    assert bench.main(common) == 0
    episodes = (out / "runs" / "random_seed0" / "episodes.csv").read_text()
    assert bench.main([*common, "--resume"]) == 0  # same settings: reused, not run again
    assert (out / "runs" / "random_seed0" / "episodes.csv").read_text() == episodes
    capsys.readouterr()
    assert bench.main([*common, "latency_budget=0.3", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "random_seed0 was run with other settings: env_kwargs (run: " in err and err.count("\n") == 1, err
    assert bench.main([*common[:6], "3", *common[6:], "--resume"]) == 2  # a 3-evaluation column from 2-evaluation runs
    assert "n_episodes (run: 2, now: 3)" in capsys.readouterr().err


def test_a_budget_a_run_did_not_reach_is_not_reported(tmp_path) -> None:
    bench = _search_strategies()
    csv_path = tmp_path / "episodes.csv"
    csv_path.write_text("episode,reward,accuracy,budget_met\n1,-1.0,50.0,1\n2,-0.5,60.0,1\n")
    curve = bench.best_so_far(csv_path)
    assert bench.at_budget(curve, 2) == (-0.5, 60.0)
    reward, accuracy = bench.at_budget(curve, 3)  # the run stopped after 2 evaluations
    assert reward != reward and accuracy != accuracy  # NaN: not the 2-evaluation value relabelled
