"""A search killed at any episode and resumed leaves the same run folder as the uninterrupted run."""

from __future__ import annotations

import csv
import os
import signal
from pathlib import Path

import pytest
import torch

import train_agent
from haq_gym.policy import PolicyFile
from haq_gym.runs import EPISODE_COLUMNS, RunConfig, RunRecorder, run_search
from haq_gym.runs.checkpoint import SearchInterrupted, read_checkpoint_episodes

EPISODES = 4
EVERY = 2
HYPERPARAMS = {
    "haq-ddpg": {"warmup": 1, "batch_size": 16, "hidden1": 32, "hidden2": 32},
    # one warm-up episode, then a gradient step per stored transition batch at every episode end
    "sac": {
        "episode_reward_relabel": True,
        "learning_starts": {"episodes": 1},
        "batch_size": 16,
        "buffer_size": 1000,
        "train_freq": [1, "episode"],
        "gradient_steps": 2,
        "policy_kwargs": {"net_arch": [8]},
    },
    "random": {},
    # two random trials, then TPE proposes from the history: the resumed run must rebuild it exactly
    "optuna-tpe": {"n_startup_trials": 2},
    "optuna-nsga2": {"population_size": 2},
    # on-policy: one rollout per episode, so every rollout start is an episode boundary
    "ppo": {"n_steps": {"episodes": 1}, "batch_size": 16, "n_epochs": 2, "policy_kwargs": {"net_arch": [8]}},
    "a2c": {"n_steps": {"episodes": 1}, "policy_kwargs": {"net_arch": [8]}},
    # one update = 2 candidates x 1 episode: the checkpoint at episode 2 is the second update's start
    "ars": {"n_delta": 1, "n_top": 1, "n_eval_episodes": 1, "delta_std": 1.0},
    "uniform": {},
    "greedy-sensitivity": {},
}


@pytest.fixture(autouse=True)
def one_thread(two_threads: None) -> None:
    """One torch thread, as ``train_agent.py`` sets with ``HAQ_GYM_THREADS=1`` (every run of a test uses the same)."""
    torch.set_num_threads(1)


def config(algo: str, tiny_env_kwargs: dict) -> RunConfig:
    env_kwargs = {k: v for k, v in tiny_env_kwargs.items() if k != "progress"}
    return RunConfig(
        algo=algo,
        env="HAQ-MobileNetV2-v0",
        seed=3,
        n_episodes=EPISODES,
        env_kwargs=env_kwargs,
        hyperparams=dict(HYPERPARAMS[algo]),
    )


def killed_after(k: int):
    """A ``watch`` that raises KeyboardInterrupt (a kill, mid-episode for the RL agents) once ``k`` rows exist."""

    def watch(recorder: RunRecorder) -> None:
        def kill(_outcome) -> None:
            if recorder.episodes == k:
                raise KeyboardInterrupt

        recorder.problem.add_observer(kill)

    return watch


def rows_without_times(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "episodes.csv", newline="") as fh:
        return [{k: v for k, v in row.items() if k != "eval_time_s"} for row in csv.DictReader(fh)]


def best(run_dir: Path) -> tuple:
    policy = PolicyFile.load(run_dir / "best_policy.json")
    return policy.bits, policy.found_by["episode"], policy.found_by["reward"]


@pytest.mark.parametrize(
    "algo",
    [
        "haq-ddpg",
        "sac",
        "random",
        "optuna-tpe",
        # the same replay as optuna-tpe (every sampler: tests/agents/blackbox/test_evaluation.py, fast)
        pytest.param("optuna-nsga2", marks=pytest.mark.slow),
        "ppo",
        pytest.param("a2c", marks=pytest.mark.slow),  # the same on-policy checkpoints as ppo
        "ars",
        "uniform",
        "greedy-sensitivity",
    ],
)
def test_killed_and_resumed_run_equals_uninterrupted_run(algo: str, tiny_env_kwargs: dict, tmp_path: Path) -> None:
    """Killed after episode 3 (mid-episode for the RL agents: inside the last step), checkpoint at 2, resumed."""
    kill_at = 3
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    run_search(config(algo, tiny_env_kwargs), os.fspath(whole), progress=False, checkpoint_every=EVERY)
    with pytest.raises(SearchInterrupted) as stop:
        run_search(
            config(algo, tiny_env_kwargs),
            os.fspath(killed),
            progress=False,
            checkpoint_every=EVERY,
            watch=killed_after(kill_at),
        )
    assert stop.value.episodes == kill_at and stop.value.run_dir == killed
    assert len(rows_without_times(killed)) == kill_at
    assert read_checkpoint_episodes(killed) == kill_at // EVERY * EVERY
    result = run_search(None, progress=False, resume=killed, checkpoint_every=EVERY)
    # uniform stops early: the tiny problem has three feasible widths (the kill lands in its last episode)
    assert result.episodes == len(rows_without_times(whole)) == (3 if algo == "uniform" else EPISODES)
    assert rows_without_times(killed) == rows_without_times(whole)
    assert best(killed) == best(whole)


def test_command_line_ctrl_c_stops_at_the_episode_end_in_one_line_and_resumes_exactly(
    tiny_env_kwargs: dict, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole, out = tmp_path / "whole", tmp_path / "run"

    def args(run: Path) -> list[str]:
        return [
            "--algo",
            "random",
            "--episodes",
            "4",
            "--seed",
            "0",
            "--output",
            str(run),
            "--no-progress",
            "--checkpoint-every",
            "0",
            "--env-kwargs",
        ] + [f"{k}={v}" for k, v in tiny_env_kwargs.items()]

    assert train_agent.main(args(whole)) == 0
    record = RunRecorder.record

    def record_then_ctrl_c(self: RunRecorder, outcome) -> None:
        record(self, outcome)
        if self.episodes == 2:
            os.kill(os.getpid(), signal.SIGINT)  # a real SIGINT: the search ends the episode, checkpoints, stops

    monkeypatch.setattr(RunRecorder, "record", record_then_ctrl_c)
    assert train_agent.main(args(out)) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"interrupted at episode 2; resume with: python train_agent.py --resume {out}"
    assert "Traceback" not in "\n".join(err)
    assert read_checkpoint_episodes(out) == 2
    monkeypatch.setattr(RunRecorder, "record", record)
    assert train_agent.main(["--resume", str(out), "--no-progress"]) == 0
    assert rows_without_times(out) == rows_without_times(whole)
    assert best(out) == best(whole)
    assert train_agent.main(["--resume", str(out)]) == 0
    assert "already finished: 4 of 4 episodes" in capsys.readouterr().out


def test_resume_refuses_what_is_not_a_resumable_search_run(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    assert train_agent.main(["--resume", str(tmp_path / "empty")]) == 2
    assert "is not a search run folder" in capsys.readouterr().err
    assert train_agent.main(["--resume", str(tmp_path / "empty"), "--seed", "1"]) == 2
    assert "drop --seed" in capsys.readouterr().err
    run = fake_run(tmp_path / "sde", "sac", "hyperparams: {use_sde: true}\n")
    assert train_agent.main(["--resume", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: sac with use_sde cannot be resumed exactly: SB3 draws")


def test_checkpoint_every_is_refused_up_front_for_a_run_that_cannot_resume(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    args = ["--algo", "ppo", "--hyperparams", "use_sde=true", "--checkpoint-every", "5", "--output", str(out)]
    assert train_agent.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: --checkpoint-every: ppo with use_sde cannot be resumed exactly: SB3 draws the exploration noise at the "
        "start of a rollout, before the episode boundary where the checkpoint is taken; drop use_sde to resume"
    ]
    assert not out.exists()


def test_resume_takes_the_folder_lock(tmp_path: Path, capsys) -> None:
    from haq_gym.runs.run_folder import lock_folder

    run = fake_run(tmp_path / "run", "random")
    held = lock_folder(run)  # as a running (or resuming) search holds it
    try:
        with pytest.raises(FileExistsError, match="in use by another process"):
            run_search(None, progress=False, resume=run)
        assert train_agent.main(["--resume", str(run)]) == 2
        assert "in use by another process" in capsys.readouterr().err
    finally:
        held.close()


def fake_run(run: Path, algo: str, extra: str = "") -> Path:
    """A run folder as a search leaves it before its first episode: config.yml and the header of episodes.csv."""
    run.mkdir()
    (run / "config.yml").write_text(f"algo: {algo}\nenv: HAQ-MobileNetV2-v0\nseed: 0\nn_episodes: 3\n{extra}")
    (run / "episodes.csv").write_text(",".join(EPISODE_COLUMNS) + "\n")
    return run
