"""Best feasible result against policy evaluations, one step curve per search strategy."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from haq_gym.plots.figure_file import save_figure


def plot_strategy_curves(
    curves: Mapping[str, Sequence[Sequence[float]]],
    path: str | os.PathLike[str],
    ylabel: str = "best feasible reward",
    title: str | None = None,
) -> Figure:
    """Per strategy, the mean over seeds of the best-so-far value after each evaluation, as steps.

    ``curves`` maps a strategy to its seeds' best-so-far sequences (``-inf`` or NaN before the
    first feasible policy); a run that stopped early holds its last value. The band spans the
    seeds' minimum to maximum.
    """
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    for i, (strategy, runs) in enumerate(curves.items()):
        kept = [list(r) for r in runs if len(r)]
        if not kept:
            continue
        length = max(len(r) for r in kept)
        padded = np.array([r + [r[-1]] * (length - len(r)) for r in kept], dtype=np.float64)
        padded[~np.isfinite(padded)] = np.nan
        x = np.arange(1, length + 1)
        with warnings.catch_warnings():  # all-NaN columns (no feasible policy yet) are expected
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(padded, axis=0)
            low, high = np.nanmin(padded, axis=0), np.nanmax(padded, axis=0)
        ax.step(
            x, mean, where="post", color=f"C{i}", label=f"{strategy} ({len(runs)} seed{'' if len(runs) == 1 else 's'})"
        )
        if len(runs) > 1:
            ax.fill_between(x, low, high, step="post", color=f"C{i}", alpha=0.15)
    ax.set_xlabel("policy evaluations")
    ax.set_ylabel(f"{ylabel} (mean; band: min-max over seeds)")
    ax.set_title(title or "Best feasible result so far, per strategy", fontsize=10)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
