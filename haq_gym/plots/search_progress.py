"""Reward per episode with its best-so-far line, and accuracy against latency."""

from __future__ import annotations

import csv
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_search_progress(episodes_csv: str | os.PathLike, path: str | os.PathLike) -> None:
    """Two panels from a run's ``episodes.csv``."""
    with open(episodes_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise ValueError(f"{os.fspath(episodes_csv)} has no episodes to plot")
    ep = [int(r["episode"]) for r in rows]
    reward = [float(r["reward"]) for r in rows]
    best, run = [], float("-inf")
    for r, ok in zip(reward, (r["budget_met"] == "1" for r in rows)):
        run = max(run, r) if ok else run
        best.append(run)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot(ep, reward, ".", alpha=0.5, label="episode reward")
    ax1.plot(ep, best, "-", color="C3", label="best so far (budget met)")
    ax1.set_xlabel("episode")
    ax1.set_ylabel("reward")
    ax1.legend(fontsize=8)
    sc = ax2.scatter([float(r["latency_ratio"]) for r in rows], [float(r["accuracy"]) for r in rows], c=ep,
                     cmap="viridis", s=12)
    fig.colorbar(sc, ax=ax2, label="episode")
    ax2.set_xlabel("latency ratio")
    ax2.set_ylabel("validation top-1 (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
