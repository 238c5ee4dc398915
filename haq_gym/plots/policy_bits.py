"""Bar chart of a policy's per-layer bit widths, in the style of the HAQ paper's figures."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from haq_gym.policy import PolicyFile  # noqa: E402


def plot_policy_bits(policy: PolicyFile, path: str | os.PathLike, layer_kinds: list[str] | None = None) -> None:
    """Weight bits as bars above the axis, activation bits below, one pair per layer.

    ``layer_kinds`` (``"depthwise"``, ``"conv"``, ``"linear"``) colours the bars, as the
    paper separates depthwise from pointwise layers. Unquantized tensors (-1) are drawn
    as empty.
    """
    n = len(policy.bits)
    kinds = layer_kinds or ["conv"] * n
    colours = {"depthwise": "#4c72b0", "conv": "#dd8452", "linear": "#55a868"}
    xs = range(n)
    w = [max(b[0], 0) for b in policy.bits]
    a = [-max(b[1], 0) for b in policy.bits]
    fig, ax = plt.subplots(figsize=(max(8, n * 0.22), 4.2))
    ax.bar(xs, w, color=[colours.get(k, "grey") for k in kinds], edgecolor="black", linewidth=0.3)
    ax.bar(xs, a, color=[colours.get(k, "grey") for k in kinds], edgecolor="black", linewidth=0.3, alpha=0.55)
    ax.axhline(0, color="black", linewidth=0.8)
    top = max([8] + w)
    ax.set_ylim(-top - 1, top + 1)
    ax.set_yticks(range(-top, top + 1, 2))
    ax.set_yticklabels([str(abs(t)) for t in range(-top, top + 1, 2)])
    ax.set_xlabel("layer (module order)")
    ax.set_ylabel("activation bits      weight bits")
    costs = policy.costs
    title = f"{policy.model} on {policy.dataset}: "
    if "search_val_top1" in policy.accuracy:
        title += f"top-1 {policy.accuracy['search_val_top1']:.2f}% (float {policy.accuracy.get('float_search_val_top1', float('nan')):.2f}%), "
    title += f"latency {costs.get('latency_ratio', float('nan')):.3f}, flash {costs.get('flash_ratio', float('nan')):.3f}"
    ax.set_title(title, fontsize=9)
    present = sorted(set(kinds), key=list(colours).index)
    ax.legend(handles=[Patch(color=colours[k], label=k) for k in present], loc="upper center", fontsize=8,
              ncol=len(present), bbox_to_anchor=(0.5, -0.16), frameon=False)
    ax.set_xlim(-0.8, n - 0.2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
