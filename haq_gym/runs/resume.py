"""Continuing a search run folder: what it holds, whether it can go on, and its history put back.

A resumed run goes on from its latest checkpoint (:mod:`haq_gym.runs.checkpoint`), not from
its last recorded episode: the rows of ``episodes.csv`` after the checkpoint are removed
(atomically) and played again, so the finished folder is the one an uninterrupted run leaves.
The rows that stay fill the evaluator's policy cache and the recorder's best-so-far.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from haq_gym.runs.checkpoint import RecordedEvaluation
from haq_gym.runs.recorder import EPISODE_COLUMNS
from haq_gym.runs.run_config import RunConfig, UsageError
from haq_gym.util.files import write_atomic


class RunFinished(Exception):
    """``--resume`` on a run that already spent its episode budget (nothing to do)."""


@dataclass(frozen=True)
class RunHistory:
    """A run folder's settings and its recorded episodes (``episodes.csv`` rows as strings)."""

    run_dir: Path
    config: RunConfig
    rows: list[dict[str, str]]


def read_run(run_dir: str | os.PathLike[str]) -> RunHistory:
    """The settings and episodes of a search run folder; ``UsageError`` if ``run_dir`` is not one.

    Raises :class:`RunFinished` when the run already recorded its ``n_episodes``.
    """
    run_dir = Path(run_dir)
    config_path, csv_path = run_dir / "config.yml", run_dir / "episodes.csv"
    if not run_dir.is_dir() or not config_path.is_file() or not csv_path.is_file():
        raise UsageError(
            f"--resume {os.fspath(run_dir)!r} is not a search run folder (it needs the config.yml and "
            "episodes.csv that train_agent.py writes)"
        )
    try:
        with open(config_path) as fh:
            data = yaml.safe_load(fh)
        config = RunConfig.from_dict(data)
    except (yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError) as err:
        raise UsageError(f"--resume {os.fspath(run_dir)!r}: config.yml is not a search run's config ({err})") from None
    with open(csv_path, newline="") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != EPISODE_COLUMNS:
            raise UsageError(
                f"--resume {os.fspath(run_dir)!r}: episodes.csv does not have the columns {', '.join(EPISODE_COLUMNS)}"
            )
        rows = list(reader)
    if len(rows) >= config.n_episodes:
        raise RunFinished(
            f"run {os.fspath(run_dir)!r} already finished: {len(rows)} of {config.n_episodes} "
            "episodes recorded; nothing to resume"
        )
    return RunHistory(run_dir, config, rows)


def keep_rows(csv_path: Path, rows: list[dict[str, str]]) -> None:
    """Rewrite ``episodes.csv`` (atomically) with only ``rows``."""
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, EPISODE_COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(csv_path, out.getvalue().encode())


@dataclass(frozen=True)
class RestoredHistory:
    """What :func:`restore_history` put back: the best feasible reward and its episode, and every evaluation."""

    best_reward: float
    best_episode: int | None
    evaluations: list[RecordedEvaluation]


def restore_history(problem: Any, rows: list[dict[str, str]]) -> RestoredHistory:
    """Put ``rows`` into ``problem``'s evaluator cache; return the best feasible reward among them and its episode.

    Rewards are recomputed from the exact accuracies (the file rounds them), so the resumed
    run compares new rewards with the same number the uninterrupted run kept. The
    evaluations (policy, exact accuracy) are returned too, for strategies that replay them.
    """
    best_reward, best_episode = float("-inf"), None
    evaluations: list[RecordedEvaluation] = []
    for i, row in enumerate(rows, start=1):
        policy = [[int(w), int(a)] for w, a in zip(row["w_bits"].split(), row["a_bits"].split(), strict=True)]
        accuracy = problem.setup.evaluator.remember(policy, float(row["accuracy"]))
        evaluations.append((policy, accuracy))
        reward = problem.reward_fn(accuracy, problem.reference_accuracy, problem.costs(policy), problem.cost_model)
        if int(row["budget_met"]) and reward > best_reward:
            best_reward, best_episode = reward, i
    return RestoredHistory(best_reward, best_episode, evaluations)
