"""A three-objective Pareto front (accuracy, latency, flash) as pairwise panels."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from haq_gym.plots.figure_file import save_figure

OBJECTIVES = {"accuracy": "validation top-1 (%)", "latency_ratio": "latency ratio", "flash_ratio": "flash ratio"}
PANELS = (
    ("latency_ratio", "accuracy", "flash_ratio"),
    ("flash_ratio", "accuracy", "latency_ratio"),
    ("latency_ratio", "flash_ratio", "accuracy"),
)


def plot_pareto_front(
    trials: Sequence[Mapping[str, float]],
    front: Sequence[Mapping[str, float]],
    path: str | os.PathLike[str],
    budgets: Mapping[str, float | None] | None = None,
    title: str | None = None,
) -> Figure:
    """Three panels, one per pair of objectives, the front's points coloured by the third.

    A front that is non-dominated in three objectives need not look so in a projection: a
    point that seems beaten in one panel is better in the objective its colour shows.
    ``budgets`` (``{"latency": 0.5, "flash": None}``) draws each budget as a dashed line.
    """
    budgets = budgets or {}
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    for ax, (x, y, third) in zip(axes, PANELS, strict=True):
        ax.scatter([t[x] for t in trials], [t[y] for t in trials], s=10, color="0.75", label="trial")
        points = ax.scatter(
            [t[x] for t in front],
            [t[y] for t in front],
            c=[t[third] for t in front],
            s=30,
            cmap="viridis_r" if third != "accuracy" else "viridis",
            edgecolor="black",
            linewidth=0.4,
            label="Pareto front (3 objectives)",
        )
        fig.colorbar(points, ax=ax, label=OBJECTIVES[third])
        for name, limit in budgets.items():
            if limit is None:
                continue
            column = f"{name}_ratio"
            if column == x:
                ax.axvline(limit, color="black", linestyle="--", linewidth=0.9, label=f"{name} budget {limit:g}")
            elif column == y:
                ax.axhline(limit, color="black", linestyle="--", linewidth=0.9, label=f"{name} budget {limit:g}")
        ax.set_xlabel(OBJECTIVES[x])
        ax.set_ylabel(OBJECTIVES[y])
        ax.set_title(f"{OBJECTIVES[y].split(' (')[0]} against {OBJECTIVES[x]}", fontsize=10)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(title or f"NSGA-II: {len(front)} non-dominated of {len(trials)} trials", fontsize=11)
    return save_figure(fig, path)
