"""Run folders are claimed atomically: concurrent runs on one --output never share it; nothing earlier is touched."""

from __future__ import annotations

import multiprocessing

import pytest

from haq_gym.runs import CLAIM_NAME, claim_folder, lock_folder, prepare_run_folder, release_unused


def _claim(path: str, start, results) -> None:
    start.wait()
    try:
        claim_folder(path)
        results.put("claimed")
    except FileExistsError:
        results.put("refused")


@pytest.mark.parametrize("exists", [False, True])
def test_concurrent_claims_of_one_folder_let_exactly_one_process_in(tmp_path, exists) -> None:
    target = tmp_path / "run"
    if exists:
        target.mkdir()  # an empty folder: the case "exists and is empty, then mkdir(exist_ok=True)" got wrong
    ctx = multiprocessing.get_context("fork")
    start, results = ctx.Barrier(6), ctx.Queue()
    procs = [ctx.Process(target=_claim, args=(str(target), start, results)) for _ in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    outcomes = sorted(results.get(timeout=5) for _ in procs)
    assert outcomes == ["claimed"] + ["refused"] * 5
    assert [p.name for p in target.iterdir()] == [CLAIM_NAME]


def test_a_claimed_folder_is_refused_and_left_alone(tmp_path) -> None:
    first = prepare_run_folder(tmp_path / "run", "unused")
    (first / "episodes.csv").write_text("precious\n")
    with pytest.raises(FileExistsError, match="already exists and is not empty"):
        prepare_run_folder(tmp_path / "run", "unused")
    assert (first / "episodes.csv").read_text() == "precious\n"


def test_default_names_count_up_and_unused_claims_are_released(tmp_path) -> None:
    a = prepare_run_folder(None, "algo_env_seed0", root=tmp_path)
    b = prepare_run_folder(None, "algo_env_seed0", root=tmp_path)
    assert (a.name, b.name) == ("algo_env_seed0", "algo_env_seed0_2")
    assert release_unused(b) and not b.exists()
    (a / "config.yml").write_text("x")
    assert not release_unused(a) and a.exists()


def test_unwritable_location_is_a_one_line_os_error(tmp_path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")  # unwritable for root too, unlike a chmod
    with pytest.raises(OSError, match=r"cannot create run folder .*a_file/run.*Not a directory"):
        claim_folder(blocker / "run")


def test_a_resumed_folder_is_locked_against_a_second_resume(tmp_path) -> None:
    out = claim_folder(tmp_path / "bench", "benchmark folder")
    held = lock_folder(out, "benchmark folder")
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()

    def second() -> None:
        try:
            lock_folder(out, "benchmark folder")
            results.put("locked")
        except FileExistsError as err:
            results.put(str(err))

    p = ctx.Process(target=second)
    p.start()
    p.join(30)
    assert "is in use by another process" in results.get(timeout=5)
    held.close()
    again = lock_folder(out)  # released with its handle
    again.close()
