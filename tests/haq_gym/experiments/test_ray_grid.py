"""The grid on Ray (a local instance, ``ray.init(num_cpus=2)``): same results as the local pool, failures, bad input."""

from __future__ import annotations

import csv
import importlib.util
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from haq_gym.experiments.jobs import GridSettings, Job, run_jobs
from haq_gym.experiments.ray_grid import check_answers, import_ray

REPO = Path(__file__).resolve().parents[3]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def read_results(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return [{k: v for k, v in row.items() if k != "run_seconds"} for row in csv.DictReader(fh)]


def test_a_2x2_grid_on_ray_gives_the_local_pool_results(ray_instance, tiny_checkpoint: str, tmp_path: Path) -> None:
    bench = load_script("search_strategies")
    common = [
        "--strategies",
        "random",
        "uniform",
        "--seeds",
        "0",
        "1",
        "--budgets",
        "1",
        "2",
        "--no-progress",
        "--env-kwargs",
        "width_mult=0.35",
        f"checkpoint={tiny_checkpoint}",
        "val_size=64",
        "calibration_size=16",
    ]
    assert bench.main([*common, "--workers", "2", "--output", str(tmp_path / "local")]) == 0
    assert bench.main([*common, "--ray", "auto", "--output", str(tmp_path / "ray")]) == 0
    local, on_ray = read_results(tmp_path / "local" / "results.csv"), read_results(tmp_path / "ray" / "results.csv")
    assert len(local) == 8 and on_ray == local
    for run in ("random_seed0", "uniform_seed1"):  # the run folders came back, finished
        assert (tmp_path / "ray" / "runs" / run / "job.json").is_file()
        assert (tmp_path / "ray" / "runs" / f"{run}.log").is_file()


def test_a_crashed_ray_worker_fails_its_run_only(ray_instance, tmp_path: Path) -> None:
    # The job kills the Ray worker process that runs it (its parent), as an out-of-memory kill would.
    crash = Job("crash", tmp_path / "c", ("-c", "import os, signal; os.kill(os.getppid(), signal.SIGKILL)"))
    fine = Job("fine", tmp_path / "f", ("-c", f"import os; os.makedirs({str(tmp_path / 'f')!r})"))
    results = run_jobs([crash, fine], GridSettings(workers=None, ray="auto"), progress=False)
    assert not results[0].ok and results[0].error.startswith("Ray task failed")
    assert "Ray task failed" in results[0].log.read_text()
    assert results[1].ok


def test_a_ray_address_that_does_not_answer_is_named_within_seconds() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(ConnectionError, match=f"Ray cluster at 127.0.0.1:{port} does not answer"):
        check_answers(f"127.0.0.1:{port}")
    assert time.monotonic() - start < 10
    with pytest.raises(ValueError, match="HOST:PORT"):
        check_answers("nowhere")


def test_the_command_line_names_the_address_and_the_missing_extra(tmp_path: Path) -> None:
    script = str(REPO / "benchmarks" / "search_strategies.py")
    start = time.monotonic()
    bad = subprocess.run(
        [
            sys.executable,
            script,
            "--strategies",
            "random",
            "--ray",
            "10.255.255.1:6379",
            "--output",
            str(tmp_path / "a"),
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "Ray cluster at 10.255.255.1:6379 does not answer" in bad.stderr
    assert "Traceback" not in bad.stderr and time.monotonic() - start < 60
    # Ray not installed: an import of ray that fails
    missing = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.modules['ray'] = None; sys.argv[0] = 'x'; "
            "from haq_gym.experiments.ray_grid import import_ray; import_ray()",
        ],
        capture_output=True,
        text=True,
    )
    assert missing.returncode != 0 and 'pip install "haq-gym[ray]"' in missing.stderr


def test_import_ray_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r"haq-gym\[ray\]"):
        import_ray()
