"""Where a tuning study lives: a journal file (default), SQLite, or PostgreSQL for several machines.

``open_storage(url)`` accepts:

- a path ending in ``.log`` or ``.journal``: Optuna's JournalStorage on a
  ``JournalFileBackend`` file (created if missing). Needs nothing installed and takes any
  number of worker processes on one machine (Optuna locks the file);
- ``sqlite:///PATH``: Optuna's RDBStorage on SQLite, for one process at a time;
- ``postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE``: RDBStorage on PostgreSQL, the
  storage for workers on several machines, through the psycopg (3) driver
  (``pip install -e ".[distributed]"``) whatever SQLAlchemy's default driver is;
  ``postgresql+psycopg2://`` selects psycopg2 instead.

Trials of a killed worker are never left RUNNING for good: every storage records a
heartbeat of each running trial, a trial whose heartbeat stopped is failed and re-queued
with the same parameters (Optuna's ``RetryHeartbeatStaleTrialCallback``) when a worker
next starts a trial. RDBStorage has this built in (stale after ``grace_period`` seconds);
Optuna's JournalStorage has no heartbeat, so :class:`HeartbeatJournalStorage` adds one and
also fails at once a trial whose worker process is gone from this machine.
"""

from __future__ import annotations

import os
import random
import socket
import time
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

from optuna.exceptions import ExperimentalWarning
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat  # the extension point RDBStorage implements
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

JOURNAL_SUFFIXES = (".log", ".journal")
DEFAULT_JOURNAL_NAME = "study.log"
HEARTBEAT_INTERVAL_S = 10
GRACE_PERIOD_S = 60
# A trial killed this many times is not re-queued again (it probably kills its worker).
MAX_RETRY = 3
HEARTBEAT_KEY = "haq_gym:heartbeat"
SCHEMA_RACE_ATTEMPTS = 5
POSTGRES_SCHEMES = ("postgresql", "postgresql+psycopg", "postgresql+psycopg2")
ACCEPTED_FORMS = (
    f"a journal file path ending in {' or '.join(JOURNAL_SUFFIXES)} (the default: "
    f"<output>/{DEFAULT_JOURNAL_NAME}), sqlite:///PATH (one process at a time), or "
    "postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE (several machines)"
)


class StorageError(ValueError):
    """A storage URL that cannot be used, with what was expected."""


# libpq connection parameters that hold a secret; SQLAlchemy passes URL query parameters on to libpq.
SECRET_QUERY_KEYS = ("password", "sslpassword")
REDACTED = "***"


def _split_url(url: str) -> tuple[str, str, str, str]:
    """``scheme://authority/path?query`` -> (scheme, authority, path, query), without decoding anything."""
    scheme, _, rest = url.partition("://")
    rest, _, query = rest.partition("?")
    authority, slash, path = rest.partition("/")
    return scheme, authority, slash + path, query


def url_secrets(url: str) -> list[str]:
    """The secret values written in ``url``: the user-info password and ``password``/``sslpassword`` parameters.

    Each is listed raw and percent-decoded, so messages that show either can be scrubbed.
    """
    if "://" not in url:
        return []
    _, authority, _, query = _split_url(url)
    found = []
    userinfo, at, _ = authority.rpartition("@")
    if at and ":" in userinfo:
        found.append(userinfo.partition(":")[2])
    for part in query.split("&"):
        key, eq, value = part.partition("=")
        if eq and unquote_plus(key).strip().lower() in SECRET_QUERY_KEYS:
            found.append(value)
    return sorted({v for raw in found if raw for v in (raw, unquote_plus(raw))}, key=len, reverse=True)


def redact(url: str) -> str:
    """``url`` with every credential libpq and SQLAlchemy accept in it replaced by ``***``, for messages and records.

    Covered: ``USER:PASSWORD@`` (also with several hosts), and the query parameters
    ``password`` and ``sslpassword`` in any letter case or percent-encoding. A password
    given through the environment (``PGPASSWORD``, ``PGSSLPASSWORD``, ``~/.pgpass``) is
    never part of the URL and is read by libpq itself, so it is never recorded.
    """
    if "://" not in url:
        return url
    scheme, authority, path, query = _split_url(url)
    userinfo, at, hosts = authority.rpartition("@")
    if at and ":" in userinfo:
        authority = f"{userinfo.partition(':')[0]}:{REDACTED}@{hosts}"
    parts = []
    for part in query.split("&") if query else []:
        key, eq, _value = part.partition("=")
        parts.append(f"{key}={REDACTED}" if eq and unquote_plus(key).strip().lower() in SECRET_QUERY_KEYS else part)
    return f"{scheme}://{authority}{path}" + (f"?{'&'.join(parts)}" if query else "")


def scrub(text: str, url: str) -> str:
    """``text`` (an error message) with every secret of ``url`` replaced by ``***``."""
    for secret in url_secrets(url):
        text = text.replace(secret, REDACTED)
    return text


def _this_process_namespace() -> str:
    """Identifies this machine's boot and PID namespace: a PID seen under the same value can be checked here."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        pid_ns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return socket.gethostname()
    return f"{boot}:{pid_ns}"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """Optuna's JournalStorage plus the heartbeat protocol of RDBStorage.

    The heartbeat is a trial system attribute (``haq_gym:heartbeat``) holding the time, the
    writing process and its namespace; Optuna's heartbeat thread rewrites it every
    ``heartbeat_interval`` seconds while the trial runs. A RUNNING trial is stale when its
    heartbeat is older than ``grace_period`` or when it was written on this machine by a
    process that no longer exists (a worker killed with ``kill -9`` is noticed immediately).
    """

    def __init__(
        self, path: str | os.PathLike, heartbeat_interval: int, grace_period: int, stale_trial_callback: Any
    ) -> None:
        super().__init__(JournalFileBackend(os.fspath(path)))
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.stale_trial_callback = stale_trial_callback
        self.namespace = _this_process_namespace()

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(
            trial_id,
            HEARTBEAT_KEY,
            {
                "trial_id": trial_id,
                "time": time.time(),
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "namespace": self.namespace,
            },
        )

    def _is_stale(self, trial: FrozenTrial, now: float) -> bool:
        beat = trial.system_attrs.get(HEARTBEAT_KEY)
        # A re-queued trial inherits its predecessor's system attributes: only its own heartbeat counts.
        if not isinstance(beat, dict) or beat.get("trial_id") != trial._trial_id:
            started = trial.datetime_start.timestamp() if trial.datetime_start else now
            return now - started > self.grace_period
        if beat["namespace"] == self.namespace and not _process_alive(int(beat["pid"])):
            return True
        return now - float(beat["time"]) > self.grace_period

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        return [t._trial_id for t in running if self._is_stale(t, now)]

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> Any:
        return self.stale_trial_callback


def retry_callback() -> RetryHeartbeatStaleTrialCallback:
    """Re-queues a failed trial with its parameters, at most :data:`MAX_RETRY` times."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        return RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)


def is_journal_path(url: str) -> bool:
    """Whether ``url`` names a journal file (a path with a journal suffix, not a URL)."""
    return "://" not in url and url.endswith(JOURNAL_SUFFIXES)


def open_storage(
    url: str, heartbeat_interval: int = HEARTBEAT_INTERVAL_S, grace_period: int = GRACE_PERIOD_S
) -> BaseStorage:
    """The Optuna storage for ``url`` (see the module docstring), with heartbeats and re-queuing of stale trials.

    Raises :class:`StorageError` naming the accepted forms for anything else, the missing
    driver for a PostgreSQL URL without psycopg2, and the reason when a database cannot
    be opened.
    """
    if is_journal_path(url):
        path = Path(url)
        if not path.parent.is_dir():
            raise StorageError(f"journal storage {url!r}: folder {os.fspath(path.parent)!r} does not exist")
        return HeartbeatJournalStorage(path, heartbeat_interval, grace_period, retry_callback())
    scheme, _, rest = url.partition("://")
    if url.startswith("sqlite:///") or scheme in POSTGRES_SCHEMES:
        engine_url = f"postgresql+psycopg://{rest}" if scheme == "postgresql" else url
        _check_driver(engine_url, redact(url))
        return _open_rdb(engine_url, redact(url), heartbeat_interval, grace_period)
    raise StorageError(f"unsupported storage {redact(url)!r}: expected {ACCEPTED_FORMS}")


def _check_driver(url: str, shown: str) -> None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        dialect = make_url(url).get_dialect()
    except (ArgumentError, ValueError) as err:
        raise StorageError(
            f"malformed storage URL {shown!r} ({scrub(str(err), url)}); expected {ACCEPTED_FORMS}"
        ) from None
    try:
        dialect.import_dbapi()
    except ImportError as err:
        raise StorageError(
            f"storage {shown!r} needs the PostgreSQL driver {err.name or 'psycopg'}, which is "
            'not installed: pip install -e ".[distributed]" (psycopg 3, for postgresql:// URLs)'
        ) from None


def _open_rdb(url: str, shown: str, heartbeat_interval: int, grace_period: int) -> RDBStorage:
    """RDBStorage with heartbeats; retried when workers starting together race to create Optuna's tables.

    On an empty PostgreSQL database, concurrent ``CREATE TABLE IF NOT EXISTS`` can fail in
    all but one session (unique violation on ``pg_type``, or "already exists"); the tables
    then exist, and opening again succeeds.
    """
    from sqlalchemy.exc import IntegrityError, ProgrammingError, SQLAlchemyError

    attempts = 0
    while True:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                return RDBStorage(
                    url,
                    engine_kwargs={"pool_pre_ping": True},
                    heartbeat_interval=heartbeat_interval,
                    grace_period=grace_period,
                    heartbeat_stale_trial_callback=retry_callback(),
                )
        except (IntegrityError, ProgrammingError) as err:
            attempts += 1
            if attempts == SCHEMA_RACE_ATTEMPTS:
                raise StorageError(f"cannot open storage {shown!r}: {scrub(_first_line(err), url)}") from None
            time.sleep(random.uniform(0.2, 1.0))
        except SQLAlchemyError as err:
            raise StorageError(f"cannot open storage {shown!r}: {scrub(_first_line(err), url)}") from None


def _first_line(err: Exception) -> str:
    return str(getattr(err, "orig", None) or err).strip().splitlines()[0]


__all__ = [
    "DEFAULT_JOURNAL_NAME",
    "HeartbeatJournalStorage",
    "StorageError",
    "is_journal_path",
    "open_storage",
    "redact",
    "retry_callback",
    "scrub",
    "url_secrets",
]
