"""Storage URLs: the accepted forms, clear errors for the rest, and heartbeats that free a dead worker's trial."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import optuna
import pytest
from optuna.storages import RDBStorage
from optuna.trial import TrialState

import train_agent
from agents.tuning.storage import HEARTBEAT_KEY, HeartbeatJournalStorage, StorageError, open_storage, redact

pytestmark = [
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
    pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize"),
]


@pytest.mark.parametrize(
    "url, message",
    [
        ("study.db", "unsupported storage 'study.db': expected a journal file path ending in .log or .journal"),
        ("mysql://user@localhost/optuna", "unsupported storage 'mysql://user@localhost/optuna'"),
        ("redis://localhost", "postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE"),
    ],
)
def test_unsupported_storage_names_the_accepted_forms(url: str, message: str) -> None:
    with pytest.raises(StorageError, match=message.replace("[", r"\[").replace("]", r"\]")):
        open_storage(url)


def test_journal_in_a_missing_folder_is_refused(tmp_path) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        open_storage(os.fspath(tmp_path / "missing" / "study.log"))
    assert not (tmp_path / "missing").exists()


def test_unreachable_postgres_is_a_clear_error_without_the_password() -> None:
    pytest.importorskip("psycopg")
    shown = r"cannot open storage 'postgresql://tuner:\*\*\*@127.0.0.1:1/optuna': "
    with pytest.raises(StorageError, match=shown) as err:
        open_storage("postgresql://tuner:secret@127.0.0.1:1/optuna")
    assert "secret" not in str(err.value)


@pytest.mark.parametrize(
    "url", ["postgresql://tuner:secret@db:5432/optuna", "postgresql://tuner:secret@db:port/optuna"]
)  # unparsable port: regex fallback
def test_passwords_are_redacted(url: str) -> None:
    assert redact(url) == url.replace("secret", "***")


def test_recorded_command_lines_hide_passwords(monkeypatch) -> None:
    monkeypatch.setattr(
        sys, "argv", ["train_agent.py", "--optimize", "--storage", "postgresql://tuner:secret@db/optuna"]
    )
    assert train_agent.command_line() == "train_agent.py --optimize --storage 'postgresql://tuner:***@db/optuna'"


def test_postgres_without_its_driver_says_what_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # makes `import psycopg` fail
    with pytest.raises(StorageError, match=r"needs the PostgreSQL driver psycopg, .*pip install -e \"\.\[distributed"):
        open_storage("postgresql://tuner@127.0.0.1:1/optuna")


def test_sqlite_is_an_rdb_storage_with_heartbeat(tmp_path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}", heartbeat_interval=5, grace_period=20)
    assert isinstance(storage, RDBStorage) and storage.get_heartbeat_interval() == 5
    assert storage.get_heartbeat_stale_trial_callback() is not None


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def running_trial(tmp_path, grace_period: int = 30) -> tuple[optuna.Study, HeartbeatJournalStorage, optuna.Trial]:
    storage = open_storage(os.fspath(tmp_path / "study.log"), heartbeat_interval=1, grace_period=grace_period)
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    trial = study.ask()
    trial.suggest_float("lr", 1e-4, 1e-2, log=True)
    return study, storage, trial


def states(study: optuna.Study) -> list[TrialState]:
    return [t.state for t in study.get_trials(deepcopy=False)]


def test_a_live_worker_keeps_its_trial(tmp_path) -> None:
    study, storage, trial = running_trial(tmp_path)
    storage.record_heartbeat(trial._trial_id)
    optuna.storages.fail_stale_trials(study)
    assert states(study) == [TrialState.RUNNING]


def test_a_trial_of_a_dead_local_process_is_failed_and_requeued_at_once(tmp_path) -> None:
    study, storage, trial = running_trial(tmp_path)
    storage.set_trial_system_attr(
        trial._trial_id,
        HEARTBEAT_KEY,
        {
            "trial_id": trial._trial_id,
            "time": time.time(),
            "pid": dead_pid(),
            "host": "here",
            "namespace": storage.namespace,
        },
    )
    optuna.storages.fail_stale_trials(study)
    failed, retry = study.get_trials(deepcopy=False)
    assert (failed.state, retry.state) == (TrialState.FAIL, TrialState.WAITING)
    assert retry.params == failed.params and retry.system_attrs["failed_trial"] == failed.number
    # The retry inherits the dead heartbeat; once a live worker runs it, it is not mistaken for stale.
    popped = study.ask()
    assert popped.number == retry.number and popped.params == failed.params
    optuna.storages.fail_stale_trials(study)
    assert states(study) == [TrialState.FAIL, TrialState.RUNNING]


def test_a_silent_trial_of_another_machine_is_stale_after_the_grace_period(tmp_path) -> None:
    study, storage, trial = running_trial(tmp_path, grace_period=30)
    beat = {"trial_id": trial._trial_id, "pid": 1, "host": "elsewhere", "namespace": "another-machine"}
    storage.set_trial_system_attr(trial._trial_id, HEARTBEAT_KEY, {**beat, "time": time.time() - 10})
    optuna.storages.fail_stale_trials(study)
    assert states(study) == [TrialState.RUNNING]
    storage.set_trial_system_attr(trial._trial_id, HEARTBEAT_KEY, {**beat, "time": time.time() - 31})
    optuna.storages.fail_stale_trials(study)
    assert states(study) == [TrialState.FAIL, TrialState.WAITING]
