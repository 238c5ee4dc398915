"""A search run's resumable state: when a runner saves it, where it lies, and the global RNGs with it.

A runner that can resume (:attr:`agents.spec.AlgorithmSpec.resumable`) is handed a
:class:`SearchCheckpoint`. At every episode boundary (its agent has learned from the
episode, nothing of the next one has happened) it calls :meth:`SearchCheckpoint.episode_end`
with a function that writes its own state (networks, optimisers, replay buffer,
exploration state, its private RNGs) into a folder. Every ``every`` episodes, and once a
clean stop was asked for (Ctrl-C, :meth:`SearchCheckpoint.request_stop`), that folder is
written as ``run_dir/checkpoint/`` together with ``state.pt`` (episodes done, the global
torch / NumPy / Python RNG states), then swapped in for the previous one, so a kill at any
moment leaves one complete checkpoint. After a requested stop, :class:`SearchInterrupted`
is raised.

On ``--resume``, the runner rebuilds its agent from :attr:`SearchCheckpoint.path`
(through :meth:`SearchCheckpoint.restore`, which also puts the global RNGs back) and plays
the episodes from :attr:`SearchCheckpoint.episodes` on; the run's ``episodes.csv`` is cut
back to those episodes first (:mod:`haq_gym.runs.resume`), so the episodes after the
checkpoint are played again exactly as before.

A strategy whose state is a function of its seed and the outcomes it has seen (the
black-box strategies: Optuna's samplers, uniform, greedy) saves nothing of its own: on
resume it runs again from the start, and its first :attr:`SearchCheckpoint.episodes`
evaluations are answered from :attr:`SearchCheckpoint.history` (the recorded policies and
accuracies) without evaluating or recording anything; the global RNGs are put back once
that replay ends (``restore`` with a loader that does nothing).
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.pt"
DEFAULT_CHECKPOINT_EVERY = 10


class SearchInterrupted(KeyboardInterrupt):
    """A search stopped after ``episodes`` recorded episodes (by a requested stop, its checkpoint written there).

    ``run_dir`` is the run folder to resume, when known.
    """

    def __init__(self, episodes: int, run_dir: Path | None = None) -> None:
        super().__init__(f"interrupted at episode {episodes}")
        self.episodes = episodes
        self.run_dir = run_dir


def global_rng_state() -> dict[str, Any]:
    """torch, NumPy and Python global RNG states in types ``torch.load(weights_only=True)`` reads."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": [int(version), list(internal), gauss_next],
    }


def _set_global_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


RecordedEvaluation = tuple[list[list[int]], float]
"""One recorded episode: the policy as evaluated (after the budget wall) and its exact accuracy."""


class SearchCheckpoint:
    """Where and when one run saves its resumable state (see the module docstring).

    ``every``: checkpoint every that many episodes (0: only on a requested stop).
    ``episodes``: episodes already done by the state in :attr:`path` (0 for a new run).
    ``history``: on resume, the recorded evaluations of those episodes, in order (set by
    :func:`~haq_gym.runs.run_search`; replaying strategies read it).
    """

    def __init__(self, run_dir: str | os.PathLike[str], every: int = DEFAULT_CHECKPOINT_EVERY) -> None:
        if every < 0:
            raise ValueError(f"--checkpoint-every must be >= 0, got {every}")
        self.run_dir = Path(run_dir)
        self.every = every
        self.stop_requested = False
        self.episodes = read_checkpoint_episodes(self.run_dir)
        self.history: list[RecordedEvaluation] = []

    @property
    def path(self) -> Path:
        """The folder of the latest complete checkpoint."""
        return self.run_dir / CHECKPOINT_DIR

    def request_stop(self) -> None:
        """Stop at the next episode boundary, after writing a checkpoint there."""
        self.stop_requested = True

    def episode_end(self, episodes_done: int, save: Callable[[Path], None], rng: dict[str, Any] | None = None) -> None:
        """Called by the runner at an episode boundary; writes a checkpoint when due, stops when asked.

        ``rng``: the global RNG states to store (:func:`global_rng_state`), for a runner that
        has already drawn from them past the boundary (default: the states as they are now).
        """
        if self.stop_requested or (self.every and episodes_done % self.every == 0):
            self._write(episodes_done, save, rng)
        if self.stop_requested:
            raise SearchInterrupted(episodes_done)

    def restore(self, load: Callable[[Path], None]) -> None:
        """Rebuild the runner's state with ``load(path)``, then put the global RNGs back as they were saved."""
        load(self.path)
        _set_global_rng_state(torch.load(self.path / STATE_FILE, weights_only=True)["rng"])

    def _write(self, episodes_done: int, save: Callable[[Path], None], rng: dict[str, Any] | None) -> None:
        tmp = self.run_dir / f"{CHECKPOINT_DIR}.tmp"
        old = self.run_dir / f"{CHECKPOINT_DIR}.old"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        save(tmp)
        torch.save({"episodes": episodes_done, "rng": global_rng_state() if rng is None else rng}, tmp / STATE_FILE)
        shutil.rmtree(old, ignore_errors=True)
        if self.path.exists():
            os.replace(self.path, old)
        os.replace(tmp, self.path)
        shutil.rmtree(old, ignore_errors=True)
        self.episodes = episodes_done


def read_checkpoint_episodes(run_dir: str | os.PathLike[str]) -> int:
    """Episodes done by the run's latest complete checkpoint (0 when there is none).

    A kill between the two renames of a checkpoint swap leaves only ``checkpoint.old``;
    it is moved back first.
    """
    run_dir = Path(run_dir)
    path, old = run_dir / CHECKPOINT_DIR, run_dir / f"{CHECKPOINT_DIR}.old"
    if not path.exists() and (old / STATE_FILE).exists():
        os.replace(old, path)
    if not (path / STATE_FILE).exists():
        return 0
    return int(torch.load(path / STATE_FILE, weights_only=True)["episodes"])
