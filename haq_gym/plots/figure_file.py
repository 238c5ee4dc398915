"""Writing a finished figure: the one place that lays it out, saves it and frees it."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure


def save_figure(fig: Figure, path: str | os.PathLike[str], *, dpi: int = 120, tight: bool = True) -> Figure:
    """Write ``fig`` to ``path`` (after ``tight_layout`` unless ``tight`` is False) and close it; returns ``fig``.

    Closing matters: pyplot keeps every figure it made alive until it is closed, so a long
    search or benchmark that draws a figure per run would otherwise grow without bound.
    """
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return fig
