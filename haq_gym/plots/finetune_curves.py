"""A finetune's loss and accuracy per epoch, with the checkpoint that validation chose."""

from __future__ import annotations

import csv
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from haq_gym.plots.figure_file import save_figure


def plot_finetune_curves(
    metrics_csv: str | os.PathLike[str], path: str | os.PathLike[str], title: str | None = None
) -> Figure:
    """Training loss (left) and train / validation / test top-1 (right) per epoch from ``metrics.csv``.

    The epoch of ``best.pt`` (the highest validation top-1; the test split never chooses) is
    marked on both panels.
    """
    with open(metrics_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise ValueError(f"{os.fspath(metrics_csv)} has no epochs to plot")
    epochs = [int(r["epoch"]) for r in rows]

    def column(name: str) -> list[float]:
        return [float(r[name]) if r.get(name) not in (None, "") else float("nan") for r in rows]

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax_loss.plot(epochs, column("train_loss"), marker=".", color="C0", label="train loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss")
    ax_loss.set_title("Loss", fontsize=10)
    for name, colour in (("train_top1", "C0"), ("val_top1", "C1"), ("test_top1", "C2")):
        ax_acc.plot(epochs, column(name), marker=".", color=colour, label=name.replace("_top1", ""))
    val = column("val_top1")
    if any(v == v for v in val):
        best = max(range(len(val)), key=lambda i: val[i] if val[i] == val[i] else float("-inf"))
        for ax in (ax_loss, ax_acc):
            ax.axvline(
                epochs[best],
                color="black",
                linestyle="--",
                linewidth=0.8,
                label=f"best.pt (epoch {epochs[best]}, chosen on validation)",
            )
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("top-1 (%)")
    ax_acc.set_title("Accuracy", fontsize=10)
    ax_loss.legend(fontsize=8)
    ax_acc.legend(fontsize=8, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=11)
    return save_figure(fig, path)
