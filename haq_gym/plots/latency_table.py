"""A latency table as small multiples: one heat map of w x a bits per layer."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from haq_gym.plots.figure_file import save_figure


def plot_latency_table(
    table: np.ndarray,
    path: str | os.PathLike[str],
    layer_names: Sequence[str] | None = None,
    title: str | None = None,
    columns: int = 8,
) -> Figure:
    """Heat maps of ``table[layer, w_bit-1, a_bit-1]``, each layer relative to its own W8A8 entry.

    Layers differ in latency by orders of magnitude, so each map is divided by the layer's
    8/8-bit latency: one colour scale then shows where bits pay (a bit-serial accelerator: a
    gradient from the corner) and where they do not (a CPU: flat). The panel title gives
    the layer's absolute W8A8 latency.
    """
    table = np.asarray(table, dtype=float)
    if table.ndim != 3 or table.shape[1:] != (8, 8):
        raise ValueError(f"expected a [layers, 8, 8] latency table, got shape {table.shape}")
    n = table.shape[0]
    names = list(layer_names) if layer_names is not None else [f"layer {i}" for i in range(n)]
    if len(names) != n:
        raise ValueError(f"{len(names)} layer names for a table of {n} layers")
    cols = max(1, min(columns, n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.7 * cols + 1.2, 1.75 * rows + 0.9), squeeze=False)
    reference = table[:, 7, 7]
    with np.errstate(invalid="ignore", divide="ignore"):
        relative = table / reference[:, None, None]
    finite = relative[np.isfinite(relative)]
    vmax = float(np.nanmax(finite)) if finite.size else 1.0
    image = None
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        image = ax.imshow(relative[i], origin="lower", cmap="magma", vmin=0.0, vmax=vmax, extent=(0.5, 8.5, 0.5, 8.5))
        ax.set_title(f"{names[i]}\nW8A8 {reference[i]:.3g}", fontsize=6)
        ax.set_xticks([1, 4, 8])
        ax.set_yticks([1, 4, 8])
        ax.tick_params(labelsize=5)
        if i % cols == 0:
            ax.set_ylabel("weight bits", fontsize=6)
        if i // cols == rows - 1 or i + cols >= n:
            ax.set_xlabel("activation bits", fontsize=6)
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.6, label="latency relative to the layer's W8A8")
    fig.suptitle(title or f"Latency table: {n} layers, w x a bits", fontsize=10)
    return save_figure(fig, path, dpi=110, tight=False)
