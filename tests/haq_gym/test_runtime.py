"""Thread counts and GPU pinning for several haq-gym processes on one machine."""

from __future__ import annotations

import pytest

from haq_gym import runtime
from haq_gym.runtime import THREADS_ENV, env_threads, threads_per_worker, worker_environment


@pytest.fixture
def sixteen_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "available_cores", lambda: 16)
    monkeypatch.delenv(THREADS_ENV, raising=False)


def test_workers_share_the_cores(sixteen_cores) -> None:
    assert [threads_per_worker(w) for w in (1, 2, 3, 16, 32)] == [16, 8, 5, 1, 1]
    with pytest.raises(ValueError, match="workers must be at least 1, got 0"):
        threads_per_worker(0)


def test_worker_environment_sets_threads_unless_the_user_did(sixteen_cores) -> None:
    base = {"PATH": "/bin"}
    env = worker_environment(0, 4, base)
    assert env[THREADS_ENV] == "4" and env["PATH"] == "/bin"
    assert worker_environment(0, 4, {THREADS_ENV: "2"})[THREADS_ENV] == "2"  # an explicit value wins


def test_workers_get_one_visible_gpu_each_round_robin(sixteen_cores, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,6")
    assert [worker_environment(k, 4, {})["CUDA_VISIBLE_DEVICES"] for k in range(4)] == ["3", "5", "6", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    assert "CUDA_VISIBLE_DEVICES" not in worker_environment(1, 4, {})  # one GPU: nothing to choose


def test_env_threads_reads_and_checks_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert env_threads() is None
    monkeypatch.setenv(THREADS_ENV, "3")
    assert env_threads() == 3
    monkeypatch.setenv(THREADS_ENV, "zero")
    with pytest.raises(ValueError, match=f"{THREADS_ENV} must be a positive integer, got 'zero'"):
        env_threads()
