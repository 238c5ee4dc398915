"""A search run at a glance: validation accuracy per evaluation, and accuracy against the budgeted cost."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from haq_gym.plots.cost_axis import LATENCY, CostAxis
from haq_gym.plots.figure_file import save_figure


@dataclass(frozen=True)
class Episodes:
    """The columns of a run's ``episodes.csv`` that the figures use, as arrays."""

    episode: np.ndarray
    reward: np.ndarray
    accuracy: np.ndarray
    feasible: np.ndarray
    costs: dict[str, np.ndarray]

    @classmethod
    def read(cls, episodes_csv: str | os.PathLike[str]) -> Episodes:
        with open(episodes_csv, newline="") as fh:
            rows = list(csv.DictReader(fh))
        if not rows:
            raise ValueError(f"{os.fspath(episodes_csv)} has no episodes to plot")
        cost_columns = [c for c in ("latency_ratio", "flash_ratio", "bitops_ratio") if c in rows[0]]
        return cls(
            episode=np.array([int(r["episode"]) for r in rows]),
            reward=np.array([float(r["reward"]) for r in rows]),
            accuracy=np.array([float(r["accuracy"]) for r in rows]),
            feasible=np.array([r["budget_met"] == "1" for r in rows]),
            costs={c: np.array([float(r[c]) for r in rows]) for c in cost_columns},
        )

    def best_so_far(self) -> np.ndarray:
        """Index of the best-reward feasible episode after each episode (-1 before the first feasible one)."""
        out, best = np.full(len(self.reward), -1), -1
        for i, (reward, ok) in enumerate(zip(self.reward, self.feasible, strict=True)):
            if ok and (best < 0 or reward > self.reward[best]):
                best = i
            out[i] = best
        return out


def feasible_frontier(cost: np.ndarray, accuracy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The best accuracy reached at each cost or below: the points where it improves, by increasing cost."""
    order = np.lexsort((-accuracy, cost))
    xs, ys, top = [], [], -np.inf
    for i in order:
        if accuracy[i] > top:
            top = accuracy[i]
            xs.append(cost[i])
            ys.append(top)
    return np.array(xs), np.array(ys)


def plot_search_progress(
    episodes_csv: str | os.PathLike[str],
    path: str | os.PathLike[str],
    axis: CostAxis = LATENCY,
    title: str | None = None,
    float_accuracy: float | None = None,
) -> Figure:
    """Two panels from a run's ``episodes.csv``, saved to ``path``; returns the (closed) figure.

    Left: validation top-1 of every evaluated policy (budget met or not) and the accuracy of
    the best feasible policy so far as a step line. Right: accuracy against the budgeted cost
    (``axis``), the budget as a dashed line, the feasible frontier (the best accuracy reached at
    each cost or below) and the best policy starred.
    """
    ep = Episodes.read(episodes_csv)
    if axis.column not in ep.costs:
        raise ValueError(f"{os.fspath(episodes_csv)} has no {axis.column!r} column to plot against")
    cost = ep.costs[axis.column]
    best = ep.best_so_far()
    fig, (ax_acc, ax_cost) = plt.subplots(1, 2, figsize=(12, 4.6))

    ax_acc.scatter(ep.episode[ep.feasible], ep.accuracy[ep.feasible], s=10, color="C0", label="budget met")
    ax_acc.scatter(
        ep.episode[~ep.feasible], ep.accuracy[~ep.feasible], s=10, marker="x", color="0.6", label="budget broken"
    )
    found = best >= 0
    if found.any():
        ax_acc.plot(
            ep.episode[found],
            ep.accuracy[best[found]],
            drawstyle="steps-post",
            color="C3",
            linewidth=1.6,
            label="best feasible so far",
        )
    if float_accuracy is not None:
        ax_acc.axhline(
            float_accuracy, color="black", linestyle=":", linewidth=0.9, label=f"float model {float_accuracy:.2f}%"
        )
    ax_acc.set_xlabel("policy evaluation (episode)")
    ax_acc.set_ylabel("validation top-1 (%)")
    ax_acc.set_title("Accuracy of each evaluated policy", fontsize=10)
    ax_acc.legend(fontsize=8, loc="lower right")

    points = ax_cost.scatter(cost, ep.accuracy, c=ep.episode, cmap="viridis", s=12)
    fig.colorbar(points, ax=ax_cost, label="episode")
    if ep.feasible.any():
        fx, fy = feasible_frontier(cost[ep.feasible], ep.accuracy[ep.feasible])
        ax_cost.plot(fx, fy, drawstyle="steps-post", color="C3", linewidth=1.4, label="feasible frontier")
        top = best[-1]
        ax_cost.scatter(
            [cost[top]],
            [ep.accuracy[top]],
            marker="*",
            s=160,
            color="C3",
            edgecolor="black",
            zorder=3,
            label=f"best: {ep.accuracy[top]:.2f}% at {cost[top]:.3f}",
        )
    if axis.budget is not None:
        ax_cost.axvline(
            axis.budget, color="black", linestyle="--", linewidth=1.0, label=f"{axis.name} budget {axis.budget:g}"
        )
    ax_cost.set_xlabel(axis.label)
    ax_cost.set_ylabel("validation top-1 (%)")
    ax_cost.set_title(f"Accuracy against {axis.name}", fontsize=10)
    ax_cost.legend(fontsize=8, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=11)
    return save_figure(fig, path)
