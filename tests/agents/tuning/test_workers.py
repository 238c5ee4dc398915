"""Worker processes on one machine: ``--n-jobs``, and a worker killed with ``kill -9`` in the middle of a trial."""

from __future__ import annotations

import csv
import os
import subprocess
import time
from pathlib import Path

from optuna.trial import TrialState

import train_agent


def recorded_episodes(episodes_csv: Path) -> int:
    if not episodes_csv.exists():
        return 0
    with open(episodes_csv, newline="") as fh:
        return len(list(csv.DictReader(fh)))


def test_killed_worker_trial_is_failed_and_retried_and_the_study_reaches_n(
    tuning_args, load_study, worker_cmd, worker_env, tmp_path
) -> None:
    out = tmp_path / "tune"
    # No intermediate reports during the run, so the kill never lands inside a journal write.
    args = tuning_args(out, n_trials=2, episodes=3, extra=("--report-every", "100"))
    first_run = out / "trial_0" / "seed_0" / "episodes.csv"
    with open(tmp_path / "worker.log", "w") as log:
        worker = subprocess.Popen(worker_cmd(args), env=worker_env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while recorded_episodes(first_run) < 1:
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the worker recorded no episode in 300 s"
            time.sleep(0.1)
        worker.kill()  # SIGKILL: no cleanup of any kind
        worker.wait()
    killed = load_study(out / "study.log").get_trials()
    assert [(t.number, t.state) for t in killed] == [(0, TrialState.RUNNING)]

    assert train_agent.main(args) == 0
    trials = load_study(out / "study.log").get_trials()
    assert [t.number for t in trials] == [0, 1, 2]
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert trials[1].params == killed[0].params and trials[1].system_attrs["failed_trial"] == 0
    assert recorded_episodes(first_run) >= 1  # the killed trial's run folder is kept
    assert recorded_episodes(out / "trial_1" / "seed_0" / "episodes.csv") == 3


def test_n_jobs_runs_worker_processes_on_one_study(tuning_args, load_study, tmp_path) -> None:
    out = tmp_path / "tune"
    assert train_agent.main(tuning_args(out, n_trials=3, extra=("--n-jobs", "2"))) == 0
    trials = load_study(out / "study.log").get_trials()
    assert {t.state for t in trials} == {TrialState.COMPLETE}
    assert 3 <= len(trials) <= 4  # 4 only if both workers started the last trial at the same instant
    workers = {t.user_attrs["worker"] for t in trials}
    assert len(workers) == 2 and str(os.getpid()) not in {w.split(":")[1] for w in workers}  # two child processes
    assert (out / "best_hyperparams.yml").is_file() and (out / "trials.csv").is_file()
