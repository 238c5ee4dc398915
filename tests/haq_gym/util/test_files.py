"""write_atomic: the whole new content or the old file, never a mix, and no temporary left behind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from haq_gym.util import write_atomic


def test_bytes_text_and_writer_functions_land_whole(tmp_path: Path) -> None:
    write_atomic(tmp_path / "a.bin", b"\x00\x01")
    write_atomic(tmp_path / "b.txt", "héllo\n")
    write_atomic(tmp_path / "c.pt", lambda fh: torch.save({"x": torch.arange(3)}, fh))
    write_atomic(str(tmp_path / "d.npy"), lambda fh: np.save(fh, np.eye(2)))
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "b.txt").read_text(encoding="utf-8") == "héllo\n"
    assert torch.load(tmp_path / "c.pt")["x"].tolist() == [0, 1, 2]
    assert np.array_equal(np.load(tmp_path / "d.npy"), np.eye(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.txt", "c.pt", "d.npy"]


def test_a_failure_mid_write_leaves_the_old_file_intact(tmp_path: Path) -> None:
    path = tmp_path / "best_policy.json"
    write_atomic(path, '{"old": true}\n')

    def half_then_crash(fh) -> None:
        fh.write(b'{"new": ')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, half_then_crash)
    assert path.read_text() == '{"old": true}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["best_policy.json"]


def test_replacing_keeps_no_trace_of_the_previous_content(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    write_atomic(path, "a much longer first version\n")
    write_atomic(path, "short\n")
    assert path.read_text() == "short\n"


def test_a_missing_folder_raises_and_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "nope" / "f.txt", "x")
    assert not (tmp_path / "nope").exists()
