"""The end-to-end benchmark on a tiny problem: every phase runs, the report reads it back, resume is safe.

The model is a random-init MobileNetV2 at width 0.35 on digits, so the numbers mean
nothing; the mechanics (budget choice on validation, baselines, finetunes, statistics,
figures, resume) are what is tested.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from haq_gym.experiments.end_to_end import EndToEnd, EndToEndSettings, Strategy
from haq_gym.experiments.jobs import DONE_FILE, GridSettings, Job, run_jobs
from haq_gym.experiments.report import RANDOM, UNIFORM, write_report

REPO = Path(__file__).resolve().parents[3]


def tiny_settings(checkpoint: str, **overrides) -> EndToEndSettings:
    base = {
        "env": "HAQ-MobileNetV2-v0",
        "dataset": "digits",
        "checkpoint": checkpoint,
        "budget": None,
        "gap": 0.5,
        "strategies": ("random",),
        "search_seeds": (0,),
        "finetune_seeds": (0,),
        "baseline_seeds": (0, 1),
        "evaluations": 2,
        "random_policies": 2,
        "epochs": 1,
        "batch_size": 256,
        "lr": 1e-3,
        "uniform": ((2, 2), (3, 3), (4, 4)),
        "env_kwargs": {"width_mult": 0.35},
        "proxies": {"lsq": {"quantizer": "lsq"}},
        "seed": 0,
    }
    base.update(overrides)
    return EndToEndSettings(**base)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: str) -> Path:
    out = tmp_path_factory.mktemp("e2e") / "bench"
    EndToEnd(tiny_settings(tiny_checkpoint), out, GridSettings(workers=2), progress=False).run()
    return out


def test_every_phase_writes_its_runs_and_the_plan(finished_run: Path) -> None:
    plan = json.loads((finished_run / "plan.json").read_text())
    curve = {(u["w"], u["a"]): u for u in plan["uniform_curve"]}
    assert set(curve) == {(2, 2), (3, 3), (4, 4)} and all(u["val"] is not None for u in curve.values())
    # the budget is a uniform precision's latency, chosen on validation, and the baseline meets it
    assert plan["budget"] in {curve[(3, 3)]["latency"], curve[(4, 4)]["latency"]}  # never the cheapest: no choice
    assert plan["budget_source"].startswith("auto")
    w, a = plan["cost_matched_uniform"]
    assert curve[(w, a)]["latency"] <= plan["budget"] + 1e-9
    for folder in (
        "search/random_seed0",
        "search/random-policies_seed0",
        f"finetune/uniform_w{w}a{a}_ft1",
        "finetune/random_seed0_ft0",
    ):
        assert (finished_run / folder / DONE_FILE).is_file(), folder
    randoms = sorted((finished_run / "random_policies").glob("random_*.json"))
    assert 1 <= len(randoms) <= 2
    with open(finished_run / "proxies.csv", newline="") as fh:
        assert {r["proxy"] for r in csv.DictReader(fh)} == {"lsq"}


def test_report_has_every_group_with_intervals_and_figures(finished_run: Path) -> None:
    text = write_report(finished_run, reps=500, seed=0, command="pytest", machine="test machine")
    with open(finished_run / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["group"] for r in rows} == {"random", UNIFORM, RANDOM}  # the strategy "random" is not the baseline
    assert sum(r["group"] == UNIFORM for r in rows) == 2
    for r in rows:
        assert 0.0 <= float(r["final_test_top1"]) <= 100.0
        assert float(r["latency_ratio"]) <= json.loads((finished_run / "plan.json").read_text())["budget"] + 1e-9
    assert "Machine: test machine" in text and "minus uniform" in text and "[" in text
    for name in ("summary.md", "uniform_curve.png", "proxy_vs_final.png", "final_accuracy.png"):
        assert (finished_run / name).stat().st_size > 0


def test_resume_reuses_finished_runs_and_refuses_other_settings(finished_run: Path, tiny_checkpoint: str) -> None:
    done = sorted(p.parent.name for p in finished_run.glob("*/*/" + DONE_FILE))
    stamp = {p: p.stat().st_mtime_ns for p in finished_run.glob("*/*/" + DONE_FILE)}
    EndToEnd(tiny_settings(tiny_checkpoint), finished_run, GridSettings(workers=2), resume=True, progress=False).run()
    assert sorted(p.parent.name for p in finished_run.glob("*/*/" + DONE_FILE)) == done
    assert all(p.stat().st_mtime_ns == t for p, t in stamp.items())  # nothing was rerun
    with pytest.raises(ValueError, match=r"other settings .*epochs"):
        EndToEnd(tiny_settings(tiny_checkpoint, epochs=2), finished_run, resume=True)
    with pytest.raises(FileExistsError, match="--resume"):
        EndToEnd(tiny_settings(tiny_checkpoint), finished_run)


def test_a_failed_job_is_reported_and_set_aside_on_resume(tmp_path: Path) -> None:
    failing = Job(
        "fails", tmp_path / "a", ("-c", "import os, sys; os.makedirs(sys.argv[1]); sys.exit(3)", str(tmp_path / "a"))
    )
    working = Job("works", tmp_path / "b", ("-c", "import os, sys; os.makedirs(sys.argv[1])", str(tmp_path / "b")))
    results = run_jobs([failing, working], 2, resume=False, desc="test", progress=False)
    assert [r.ok for r in results] == [False, True]
    assert (tmp_path / "a").is_dir() and "sys.exit(3)" in results[0].log.read_text()
    with pytest.raises(FileExistsError, match="unfinished"):
        run_jobs([failing], 1, resume=False, desc="test", progress=False)
    again = run_jobs([failing, working], 1, resume=True, desc="test", progress=False)
    assert again[1].reused and not again[0].ok
    assert (tmp_path / "a.unfinished-1").is_dir()  # the old attempt is kept, renamed


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("env", "HAQ-Nope-v0", "unknown env"),
        ("env", "HAQ-KMeans-MobileNetV2-v0", "linear"),
        ("env_kwargs", {"latency_budget": 0.3}, "set by the benchmark"),
        ("env_kwargs", {"val_size": 10}, "set by the benchmark"),
        ("budget", 1.5, "latency ratio"),
        ("epochs", 0, "epochs"),
        ("finetune_seeds", (), "at least one seed"),
        ("uniform", ((1, 4),), "2..8"),
        ("strategies", ("sac:gamma",), "not key=value"),
    ],
)
def test_bad_settings_are_refused(field: str, value, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tiny_settings("x.pt", **{field: value})


def test_strategy_labels_name_their_overrides() -> None:
    st = Strategy.parse("sac:gamma=0.5,learning_starts=10")
    assert (st.algo, st.overrides, st.label) == (
        "sac",
        ("gamma=0.5", "learning_starts=10"),
        "sac_gamma-0.5_learning_starts-10",
    )


def test_command_line_refuses_a_used_output_and_bad_uniform(tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "keep.txt").write_text("earlier results")
    script = str(REPO / "benchmarks" / "end_to_end.py")
    used = subprocess.run(
        [sys.executable, script, "--dataset", "digits", "--output", str(tmp_path / "old")],
        capture_output=True,
        text=True,
    )
    assert used.returncode == 2 and "not empty" in used.stderr
    assert (tmp_path / "old" / "keep.txt").read_text() == "earlier results"
    bad = subprocess.run(
        [sys.executable, script, "--uniform", "W4", "--output", str(tmp_path / "new")], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "W4A4" in bad.stderr
    report = subprocess.run(
        [sys.executable, script, "--report-only", "--output", str(tmp_path / "none")], capture_output=True, text=True
    )
    assert report.returncode == 2 and "no plan.json" in report.stderr


def test_two_benchmarks_never_share_an_output(tmp_path: Path, tiny_checkpoint: str) -> None:
    first = EndToEnd(tiny_settings(tiny_checkpoint), tmp_path / "bench", progress=False)  # holds the folder
    with pytest.raises(FileExistsError, match="is in use by another process"):
        EndToEnd(tiny_settings(tiny_checkpoint), tmp_path / "bench", resume=True, progress=False)
    del first
    EndToEnd(tiny_settings(tiny_checkpoint), tmp_path / "bench", resume=True, progress=False)  # released with it
