"""A resumed benchmark reuses a finished run only if it was made with the same settings (issue 15, item 5)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from haq_gym.experiments.jobs import RunSettingsDiffer, check_reusable_run, run_settings_differences

CONFIG = {"algo": "random", "env": "HAQ-MobileNetV2-v0", "seed": 0, "n_episodes": 3,
          "env_kwargs": {"latency_budget": 0.5, "action_mode": "continuous"}, "hyperparams": {}}


def finished_run(tmp_path, **changes) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yml").write_text(yaml.safe_dump({**CONFIG, **changes, "command": "train_agent.py ..."}))
    return run


def test_same_settings_are_reused(tmp_path) -> None:
    check_reusable_run(finished_run(tmp_path), dict(CONFIG))


@pytest.mark.parametrize("change,name", [
    ({"env_kwargs": {"latency_budget": 0.3, "action_mode": "continuous"}}, "env_kwargs"),  # relabelled 0.5 as 0.3
    ({"n_episodes": 10}, "n_episodes"),  # a 10-evaluation column from 3-evaluation runs
    ({"hyperparams": {"n_startup_trials": 2}}, "hyperparams"),
    ({"seed": 1}, "seed"),
])
def test_other_settings_are_refused(tmp_path, change, name) -> None:
    run = finished_run(tmp_path)
    with pytest.raises(RunSettingsDiffer, match=f"was run with other settings: {name} \\(run: "):
        check_reusable_run(run, {**CONFIG, **change})


def test_unreadable_config_is_a_difference(tmp_path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yml").write_text("algo: [unclosed")
    assert [d.split(" (")[0] for d in run_settings_differences(run, CONFIG)] == ["config.yml unreadable"]
