"""Figures of the end-to-end benchmark: the uniform curve, search reward vs final accuracy, final accuracy bars."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from haq_gym.plots.figure_file import save_figure

if TYPE_CHECKING:
    from haq_gym.experiments.end_to_end import Plan
    from haq_gym.experiments.report import Row
    from haq_gym.experiments.statistics import Interval


def _title(plan: Plan) -> str:
    s = plan.settings
    return f"{s['env']} on {s['dataset']}, LSQ finetune {s['epochs']} epochs"


def plot_uniform_curve(plan: Plan, path: str | os.PathLike[str]) -> None:
    """Finetuned validation and test top-1 of each uniform precision against its latency, with the budget."""
    done = [u for u in plan.uniform_curve if u["val"] is not None]
    done.sort(key=lambda u: u["latency"])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot([u["latency"] for u in done], [u["val"] for u in done], "o-", label="validation (chooses the budget)")
    ax.plot([u["latency"] for u in done], [u["test"] for u in done], "s--", label="test (reported only)")
    for u in done:
        ax.annotate(
            f"W{u['w']}A{u['a']}", (u["latency"], u["val"]), textcoords="offset points", xytext=(4, 4), fontsize=8
        )
    ax.axhline(plan.float_val_top1, color="grey", lw=1, label=f"float, validation ({plan.float_val_top1:.2f}%)")
    if plan.budget is not None:
        ax.axvline(plan.budget, color="red", ls=":", label=f"latency budget {plan.budget:.3f}")
    ax.set_xlabel("latency ratio (to all layers at 8 bits)")
    ax.set_ylabel("top-1 after finetune (%)")
    ax.set_title(f"Uniform precision: {_title(plan)}", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def plot_proxy_scatter(
    rows: Sequence[Row],
    plan: Plan,
    path: str | os.PathLike[str],
    proxies: Mapping[str, Mapping[str, float]] | None = None,
) -> None:
    """Each proxy's validation top-1 against final test top-1, one point per finetune.

    The first panel is the reward the searches used (accuracy before finetuning); one more
    panel per entry of ``proxies`` (name -> policy key -> validation top-1), for the same policies.
    """
    from haq_gym.experiments.report import RANDOM, UNIFORM

    panels: dict[str, Mapping[str, float]] = {
        "search reward (as searched)": {r.policy: r.search_val_top1 for r in rows if r.search_val_top1 is not None}
    }
    panels.update(proxies or {})
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5), sharey=True, squeeze=False)
    groups = sorted({r.group for r in rows if r.group not in (UNIFORM, RANDOM)})
    uniform = [r.final_test_top1 for r in rows if r.group == UNIFORM]
    for ax, (name, scores) in zip(axes[0], panels.items(), strict=True):
        random_rows = [r for r in rows if r.group == RANDOM and r.policy in scores]
        if random_rows:
            ax.scatter(
                [scores[r.policy] for r in random_rows],
                [r.final_test_top1 for r in random_rows],
                c="lightgrey",
                edgecolors="grey",
                s=25,
                label="random feasible",
            )
        for i, group in enumerate(groups):
            rs = [r for r in rows if r.group == group and r.policy in scores]
            ax.scatter(
                [scores[r.policy] for r in rs], [r.final_test_top1 for r in rs], s=40, color=f"C{i}", label=group
            )
        w, a = plan.matched_uniform()
        for k, value in enumerate(uniform):
            ax.axhline(value, color="black", ls="--", lw=0.8, label=f"uniform W{w}A{a} (per seed)" if k == 0 else None)
        ax.set_xlabel(f"{name}: validation top-1 (%)")
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("final test top-1 after finetune (%)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"Does the search reward predict the final accuracy? {_title(plan)}", fontsize=11)
    save_figure(fig, path)


def plot_accuracy_bars(intervals: Mapping[str, Interval], plan: Plan, path: str | os.PathLike[str]) -> None:
    """Mean final test top-1 per strategy and baseline, with 95% bootstrap intervals."""
    names = list(intervals)
    means = [intervals[n].value for n in names]
    low = [intervals[n].value - intervals[n].low for n in names]
    high = [intervals[n].high - intervals[n].value for n in names]
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(names)), 4.5))
    from haq_gym.experiments.report import RANDOM, UNIFORM

    colors = ["black" if n == UNIFORM else "grey" if n == RANDOM else f"C{i}" for i, n in enumerate(names)]
    ax.bar(range(len(names)), means, yerr=[low, high], capsize=5, color=colors, alpha=0.8)
    w, a = plan.matched_uniform()
    ax.set_xticks(
        range(len(names)),
        [f"uniform W{w}A{a}" if n == UNIFORM else "random feasible" if n == RANDOM else n for n in names],
        rotation=20,
    )
    spread = [intervals[n].low for n in names] + [intervals[n].high for n in names]
    ax.set_ylim(min(spread) - 1.0, max(spread) + 0.5)
    ax.set_ylabel("final test top-1 (%), mean and 95% CI")
    ax.set_title(f"At latency budget {plan.budget:.3f}: {_title(plan)}", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, path)
