"""A policy's bit widths per layer, in the style of the HAQ paper's figures, beside each layer's share of the cost."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from haq_gym.plots.cost_axis import budgeted_axis
from haq_gym.plots.figure_file import save_figure
from haq_gym.policy import PolicyFile

KIND_COLOURS = {"depthwise": "#4c72b0", "conv": "#dd8452", "linear": "#55a868"}


def plot_policy_bits(
    policy: PolicyFile,
    path: str | os.PathLike[str],
    layer_kinds: Sequence[str] | None = None,
    cost_shares: Sequence[float] | None = None,
) -> Figure:
    """Weight bits above the axis and activation bits below, one pair per named layer; returns the figure.

    ``layer_kinds`` (``"depthwise"``, ``"conv"``, ``"linear"``) colours the bars, as the paper
    separates depthwise from pointwise layers. Unquantized tensors (-1) are drawn empty. A
    weight-only policy (k-means: every activation -1) shows weights only. ``cost_shares``
    (each layer's fraction of the budgeted cost under this policy) adds a panel below that
    shows why a layer got its bits: layers holding a large share are where bits are dear.
    """
    n = len(policy.bits)
    kinds = list(layer_kinds or ["conv"] * n)
    colours = [KIND_COLOURS.get(k, "grey") for k in kinds]
    weight_only = all(a == -1 for _, a in policy.bits)
    axis = budgeted_axis(policy.budget, weight_only=weight_only)
    rows = 2 if cost_shares is not None else 1
    fig, axes = plt.subplots(
        rows,
        1,
        figsize=(max(8.0, n * 0.24), 4.4 + 2.2 * (rows - 1)),
        sharex=True,
        squeeze=False,
        gridspec_kw={"height_ratios": [2, 1][:rows]},
    )
    ax = axes[0, 0]
    xs = list(range(n))
    w = [max(b[0], 0) for b in policy.bits]
    ax.bar(xs, w, color=colours, edgecolor="black", linewidth=0.3)
    top = max([8, *w])
    if weight_only:
        ax.set_ylim(0, top + 1)
        ax.set_ylabel("weight bits")
    else:
        a = [-max(b[1], 0) for b in policy.bits]
        ax.bar(xs, a, color=colours, edgecolor="black", linewidth=0.3, alpha=0.55)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_ylim(-top - 1, top + 1)
        ax.set_ylabel("activation bits  |  weight bits")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_formatter(lambda value, _: f"{abs(int(value))}")
    ax.set_title(_title(policy, axis.name, axis.column), fontsize=9)
    present = [k for k in KIND_COLOURS if k in kinds]
    ax.legend(
        handles=[Patch(color=KIND_COLOURS[k], label=k) for k in present],
        loc="upper right",
        fontsize=8,
        ncol=len(present),
    )
    if cost_shares is not None:
        if len(cost_shares) != n:
            raise ValueError(f"cost_shares has {len(cost_shares)} entries; the policy has {n} layers")
        share_ax = axes[1, 0]
        share_ax.bar(xs, [100 * s for s in cost_shares], color=colours, edgecolor="black", linewidth=0.3)
        share_ax.set_ylabel(f"share of {axis.name} (%)")
    bottom = axes[-1, 0]
    bottom.set_xticks(xs)
    bottom.set_xticklabels(policy.layer_names or [str(i) for i in xs], rotation=90, fontsize=6)
    bottom.set_xlabel("layer (module order)")
    bottom.set_xlim(-0.8, n - 0.2)
    return save_figure(fig, path)


def _title(policy: PolicyFile, cost_name: str, cost_column: str) -> str:
    parts = [f"{policy.model} on {policy.dataset}"]
    acc = policy.accuracy.get("search_val_top1")
    if acc is not None:
        ref = policy.accuracy.get("float_search_val_top1")
        parts.append(f"validation top-1 {acc:.2f}%" + ("" if ref is None else f" (float {ref:.2f}%)"))
    value = policy.costs.get(cost_column)
    if value is not None and not math.isnan(value):
        limit = policy.budget.get("flash" if cost_name == "size" else cost_name)
        parts.append(f"{cost_name} ratio {value:.3f}" + ("" if limit is None else f" (budget {float(limit):g})"))
    return ", ".join(parts)
