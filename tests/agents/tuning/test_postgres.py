"""Tuning across machines: two ``train_agent.py --optimize`` workers on one PostgreSQL study.

A throwaway PostgreSQL server is started on a free loopback port from the installed server
binaries (Debian's ``postgresql`` package puts them under ``/usr/lib/postgresql/*/bin``),
as an unprivileged user when the tests run as root (PostgreSQL refuses to run as root).
The test is skipped, saying why, when there are no binaries, no driver, or the server
does not start.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from optuna.trial import TrialState

pytest.importorskip("psycopg", reason='the PostgreSQL driver is missing: pip install -e ".[distributed]"')


def server_binaries() -> tuple[str, str] | None:
    """``initdb`` and ``pg_ctl``: on PATH, else the newest under /usr/lib/postgresql/*/bin."""
    on_path = shutil.which("initdb"), shutil.which("pg_ctl")
    if all(on_path):
        return on_path
    for bin_dir in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True):
        found = os.path.join(bin_dir, "initdb"), os.path.join(bin_dir, "pg_ctl")
        if all(os.access(p, os.X_OK) for p in found):
            return found
    return None


def server_user() -> pwd.struct_passwd | None:
    """Who runs the server: this user, or as root an unprivileged one (postgres, else nobody)."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL cluster on 127.0.0.1 (trust authentication, fsync off), stopped and deleted afterwards."""
    binaries, user = server_binaries(), server_user()
    if binaries is None:
        pytest.skip(
            "no PostgreSQL server binaries (initdb, pg_ctl) on PATH or under /usr/lib/postgresql/*/bin; "
            "install Debian's postgresql package to run this test"
        )
    if user is None:
        pytest.skip("running as root and there is no unprivileged user (postgres, nobody) to run PostgreSQL as")
    initdb, pg_ctl = binaries
    root = tempfile.mkdtemp(prefix="haq-gym-pg-")
    os.chown(root, user.pw_uid, user.pw_gid)
    data, port = os.path.join(root, "data"), free_port()
    as_user = {
        "user": user.pw_uid,
        "group": user.pw_gid,
        "extra_groups": [],
        "cwd": root,
        "env": {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C"},
        "capture_output": True,
        "text": True,
    }
    try:
        made = subprocess.run(
            [initdb, "-D", data, "-U", "tuner", "--auth=trust", "--no-sync", "-E", "UTF8"], timeout=120, **as_user
        )
        if made.returncode != 0:
            pytest.skip(f"initdb failed: {made.stderr.strip()[-500:]}")
        started = subprocess.run(
            [
                pg_ctl,
                "-D",
                data,
                "-l",
                os.path.join(root, "server.log"),
                "-w",
                "-t",
                "60",
                "-o",
                f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -F",
                "start",
            ],
            timeout=120,
            **as_user,
        )
        if started.returncode != 0:
            log = Path(root, "server.log")
            pytest.skip(f"PostgreSQL did not start: {(log.read_text() if log.exists() else started.stderr)[-500:]}")
        yield f"postgresql://tuner@127.0.0.1:{port}/postgres"
    finally:
        if os.path.exists(os.path.join(data, "postmaster.pid")):
            subprocess.run([pg_ctl, "-D", data, "-m", "immediate", "-w", "stop"], timeout=120, **as_user)
        shutil.rmtree(root, ignore_errors=True)


def test_two_workers_share_one_postgres_study(
    postgres_url, tuning_args, load_study, worker_cmd, worker_env, tmp_path
) -> None:
    n_trials = 3
    outputs = [tmp_path / "machine_a", tmp_path / "machine_b"]  # as on two machines: each its own run folders
    workers = [
        subprocess.Popen(
            worker_cmd(tuning_args(out, n_trials=n_trials, extra=("--storage", postgres_url))),
            env=worker_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for out in outputs
    ]
    logs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], "\n".join(log[-3000:] for log in logs)

    trials = load_study(postgres_url).get_trials()
    assert [t.number for t in trials] == list(range(len(trials)))
    assert {t.state for t in trials} == {TrialState.COMPLETE}
    assert n_trials <= len(trials) <= n_trials + 1  # +1 only if both workers started the last trial at once
    ran = [{int(p.name.split("_")[1]) for p in out.glob("trial_*")} for out in outputs]
    assert ran[0] and ran[1] and not ran[0] & ran[1] and ran[0] | ran[1] == {t.number for t in trials}
    assert all((out / "best_hyperparams.yml").is_file() for out in outputs)
