"""The command-line entry: run folder contents, reproducibility, and refusing bad input."""

from __future__ import annotations

import csv

import pytest

import train_agent
from haq_gym.policy import PolicyFile
from haq_gym.search_setup import build_search_setup


def env_args(kw: dict) -> list[str]:
    return ["--env-kwargs"] + [f"{k}={v}" for k, v in kw.items()]


def tiny_cmd(tiny_env_kwargs: dict, out, episodes: int = 4, seed: int = 0) -> list[str]:
    return (
        ["--episodes", str(episodes), "--seed", str(seed), "--output", str(out), "--no-progress"]
        + env_args(tiny_env_kwargs)
        + ["--hyperparams", "warmup=1", "batch_size=16", "hidden1=32", "hidden2=32"]
    )


def test_run_folder_has_every_artifact(tiny_env_kwargs, tmp_path) -> None:
    out = tmp_path / "run"
    assert train_agent.main(tiny_cmd(tiny_env_kwargs, out)) == 0
    for name in (
        "config.yml",
        "episodes.csv",
        "best_policy.json",
        "best_policy.png",
        "search_progress.png",
        "latency_table.npy",
        "latency_table.png",
        "agent.pt",
    ):
        assert (out / name).is_file(), name
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    with open(out / "episodes.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["episode"]) for r in rows] == [1, 2, 3, 4]
    assert all(len(r["w_bits"].split()) == 53 for r in rows)
    best = PolicyFile.load(out / "best_policy.json")
    setup_names = build_search_setup(**tiny_env_kwargs).layer_names
    best.check_layers(setup_names, min_bit=2, max_bit=8)
    assert best.found_by["algo"] == "haq-ddpg" and best.budget["budget_met"]
    assert best.found_by["reward"] == pytest.approx(max(float(r["reward"]) for r in rows), abs=1e-6)


def test_same_seed_same_run_and_config_replays_it(tiny_env_kwargs, tmp_path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert train_agent.main(tiny_cmd(tiny_env_kwargs, a, episodes=5, seed=3)) == 0
    assert train_agent.main(tiny_cmd(tiny_env_kwargs, b, episodes=5, seed=3)) == 0
    assert train_agent.main(["--config", str(a / "config.yml"), "--output", str(c), "--no-progress"]) == 0
    csv_a = (a / "episodes.csv").read_text()

    def strip_times(text: str) -> list[list[str]]:
        rows = list(csv.reader(text.splitlines()))
        col = rows[0].index("eval_time_s")
        return [r[:col] + r[col + 1 :] for r in rows]

    assert strip_times(csv_a) == strip_times((b / "episodes.csv").read_text())
    assert strip_times(csv_a) == strip_times((c / "episodes.csv").read_text())


def test_existing_run_folder_is_never_touched(tiny_env_kwargs, tmp_path, capsys) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "episodes.csv").write_text("precious\n")
    assert train_agent.main(tiny_cmd(tiny_env_kwargs, out)) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "episodes.csv").read_text() == "precious\n"
    assert sorted(p.name for p in out.iterdir()) == ["episodes.csv"]


def test_bad_arguments_give_clear_errors(tiny_env_kwargs, tmp_path, capsys) -> None:
    cmd = tiny_cmd(tiny_env_kwargs, tmp_path / "x")
    assert train_agent.main(cmd + ["--hyperparams", "learning_rate=3"]) == 2
    assert "does not take hyperparameter(s) learning_rate" in capsys.readouterr().err
    impossible = ["--episodes", "1", "--output", str(tmp_path / "x"), "--no-progress"] + env_args(
        {**tiny_env_kwargs, "latency_budget": 0.01}
    )
    assert train_agent.main(impossible) == 2
    assert "impossible" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    assert train_agent.main(["--env", "CartPole-v9", "--episodes", "1", "--output", str(tmp_path / "y")]) == 2
    assert "unknown env" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_agent.main(["--algo", "nope"])
    assert train_agent.main(["--config", str(tmp_path / "none.yml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_algorithm_action_mode_mismatch_lists_what_is_allowed(tiny_env_kwargs, tmp_path, capsys) -> None:
    cmd = ["--algo", "dqn", "--episodes", "1", "--output", str(tmp_path / "dqn"), "--no-progress"] + env_args(
        {**tiny_env_kwargs, "action_mode": "continuous"}
    )
    assert train_agent.main(cmd) == 2
    assert "dqn cannot drive action_mode='continuous'; it supports discrete" in capsys.readouterr().err
    assert not (tmp_path / "dqn").exists()


@pytest.mark.parametrize("algo", ["random", "ppo"])
def test_other_algorithms_write_the_same_run_folder(algo: str, tiny_env_kwargs, tmp_path) -> None:
    out = tmp_path / algo
    hyper = ["--hyperparams", "n_steps=64", "batch_size=32"] if algo == "ppo" else []
    assert (
        train_agent.main(
            ["--algo", algo, "--episodes", "2", "--output", str(out), "--no-progress"]
            + env_args(tiny_env_kwargs)
            + hyper
        )
        == 0
    )
    assert len((out / "episodes.csv").read_text().splitlines()) == 3
    best = PolicyFile.load(out / "best_policy.json")
    assert best.found_by["algo"] == algo and best.budget["budget_met"]
    assert (out / "best_policy.png").is_file()
