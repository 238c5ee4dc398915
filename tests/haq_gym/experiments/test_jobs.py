"""The local grid pool: placement reaches the workers, a killed worker fails only its run, --resume reruns it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from haq_gym.experiments.jobs import DONE_FILE, GridSettings, Job, run_jobs
from haq_gym.experiments.placement import available_cores

# Writes its folder with what the worker saw: its thread count and its command line.
RECORD = (
    "import json, os, sys; os.makedirs(sys.argv[1]); "
    "json.dump({'threads': os.environ.get('HAQ_GYM_THREADS'), 'argv': sys.argv[2:]}, "
    "open(os.path.join(sys.argv[1], 'seen.json'), 'w'))"
)
# Kills itself with SIGKILL in the middle of its run, the first time only (a marker remembers it).
KILLED_ONCE = (
    "import os, signal, sys; os.makedirs(sys.argv[1]); marker = sys.argv[1] + '.attempted'\n"
    "if not os.path.exists(marker):\n    open(marker, 'w').close(); os.kill(os.getpid(), signal.SIGKILL)"
)


def test_each_worker_gets_its_device_and_a_share_of_the_cores(tmp_path: Path) -> None:
    jobs = [
        Job(f"run {k}", tmp_path / f"r{k}", ("-c", RECORD, str(tmp_path / f"r{k}")), device_flag="--device")
        for k in range(4)
    ]
    results = run_jobs(jobs, GridSettings(workers=2, devices=("cpu",)), progress=False)
    assert all(r.ok and r.device == "cpu" for r in results)
    for job in jobs:
        seen = json.loads((job.folder / "seen.json").read_text())
        assert seen == {"threads": str(available_cores() // 2), "argv": ["--device", "cpu"]}
        assert json.loads((job.folder / DONE_FILE).read_text())["device"] == "cpu"


def test_a_killed_worker_fails_its_run_the_grid_finishes_and_resume_reruns_it(tmp_path: Path) -> None:
    killed = Job("killed", tmp_path / "k", ("-c", KILLED_ONCE, str(tmp_path / "k")))
    others = [Job(f"ok {k}", tmp_path / f"ok{k}", ("-c", RECORD, str(tmp_path / f"ok{k}"))) for k in range(3)]
    results = run_jobs([killed, *others], 2, progress=False)
    assert not results[0].ok and results[0].error == "killed by SIGKILL"
    assert results[0].log == tmp_path / "k.log" and results[0].log.is_file()
    assert all(r.ok for r in results[1:])
    with pytest.raises(FileExistsError, match="unfinished run; pass --resume"):
        run_jobs([killed, *others], 2, progress=False)
    again = run_jobs([killed, *others], 2, resume=True, progress=False)
    assert again[0].ok and not again[0].reused and all(r.reused for r in again[1:])
    assert (tmp_path / "k.unfinished-1").is_dir() and (tmp_path / "k.unfinished-1.log").is_file()


def test_grid_settings_refuse_what_cannot_run() -> None:
    with pytest.raises(ValueError, match="needs --ray"):
        GridSettings(storage_dir="/shared")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        GridSettings(devices=("tpu",))
    with pytest.raises(ValueError, match="Ray picks the GPU"):
        GridSettings(ray="auto", devices=("cuda:1",))
