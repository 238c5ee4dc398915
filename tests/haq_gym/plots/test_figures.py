"""Every figure the project writes, checked as a user would look at it: titles, labels, budget lines, steps."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from matplotlib.lines import Line2D

from haq_gym.plots import (
    budgeted_axis,
    plot_finetune_curves,
    plot_latency_table,
    plot_pareto_front,
    plot_policy_bits,
    plot_search_progress,
    plot_strategy_curves,
)
from haq_gym.plots.search_progress import feasible_frontier
from haq_gym.policy import PolicyFile
from haq_gym.runs import EPISODE_COLUMNS

EPISODE_ROWS = [  # episode, reward, accuracy, latency, flash, budget_met
    (1, -1.0, 80.0, 0.70, 0.60, 0),
    (2, -0.5, 85.0, 0.45, 0.50, 1),
    (3, -0.8, 82.0, 0.30, 0.40, 1),
    (4, -0.2, 90.0, 0.48, 0.55, 1),
    (5, -0.1, 93.0, 0.90, 0.90, 0),
    (6, -0.6, 84.0, 0.40, 0.45, 1),
]


def write_episodes(path, rows=EPISODE_ROWS):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(EPISODE_COLUMNS)
        for ep, reward, acc, lat, fl, ok in rows:
            w.writerow([ep, reward, acc, lat, fl, lat * fl, ok, 0, 0.1, "8 4", "-1 4"])
    return path


def labelled_lines(ax, word):
    return [artist for artist in ax.get_children() if isinstance(artist, Line2D) and word in artist.get_label()]


def test_search_progress_shows_accuracy_budget_and_steps(tmp_path):
    csv_path = write_episodes(tmp_path / "episodes.csv")
    axis = budgeted_axis({"latency": 0.5, "flash": None})
    fig = plot_search_progress(csv_path, tmp_path / "p.png", axis, title="haq-ddpg, seed 0", float_accuracy=95.0)
    assert (tmp_path / "p.png").stat().st_size > 0
    left, right = fig.axes[0], fig.axes[1]
    assert left.get_ylabel() == right.get_ylabel() == "validation top-1 (%)"
    assert left.get_title() and right.get_title() and fig._suptitle.get_text() == "haq-ddpg, seed 0"
    assert right.get_xlabel().startswith("latency ratio")
    budget = labelled_lines(right, "budget")
    assert len(budget) == 1 and budget[0].get_xdata()[0] == pytest.approx(0.5)
    best = labelled_lines(left, "best feasible so far")[0]
    assert best.get_drawstyle() == "steps-post"
    # episodes 2..6: the best feasible policy is episode 2 (85) until episode 4 (90) beats it
    assert list(best.get_ydata()) == [85.0, 85.0, 90.0, 90.0, 90.0]
    frontier = labelled_lines(right, "feasible frontier")[0]
    assert list(frontier.get_xdata()) == [0.30, 0.40, 0.45, 0.48]
    assert list(frontier.get_ydata()) == [82.0, 84.0, 85.0, 90.0]


def test_search_progress_of_a_kmeans_run_plots_size(tmp_path):
    csv_path = write_episodes(tmp_path / "episodes.csv")
    axis = budgeted_axis({"latency": None, "flash": 0.5}, weight_only=True)
    fig = plot_search_progress(csv_path, tmp_path / "p.png", axis)
    right = fig.axes[1]
    assert right.get_xlabel().startswith("size ratio")
    assert labelled_lines(right, "size budget 0.5")


def test_search_progress_refuses_an_empty_run(tmp_path):
    write_episodes(tmp_path / "e.csv", rows=[])
    with pytest.raises(ValueError, match="no episodes"):
        plot_search_progress(tmp_path / "e.csv", tmp_path / "p.png")


def test_feasible_frontier_is_the_running_best_by_cost():
    xs, ys = feasible_frontier(np.array([0.5, 0.2, 0.3, 0.4]), np.array([91.0, 80.0, 79.0, 85.0]))
    assert list(xs) == [0.2, 0.4, 0.5] and list(ys) == [80.0, 85.0, 91.0]


def policy(bits, budget):
    names = [f"features.{i}.conv" for i in range(len(bits))]
    return PolicyFile(
        model="mobilenetv2",
        dataset="digits",
        layer_names=names,
        bits=bits,
        costs={"latency_ratio": 0.41, "flash_ratio": 0.3},
        accuracy={"search_val_top1": 97.5, "float_search_val_top1": 98.0},
        budget=budget,
    )


def test_policy_bits_names_layers_and_shows_cost_shares(tmp_path):
    p = policy([[8, -1], [4, 3], [2, 5], [8, 8]], {"latency": 0.5, "flash": None})
    fig = plot_policy_bits(p, tmp_path / "b.png", ["conv", "depthwise", "conv", "linear"], [0.1, 0.2, 0.3, 0.4])
    bits_ax, share_ax = fig.axes
    assert [t.get_text() for t in share_ax.get_xticklabels()] == p.layer_names
    assert "latency ratio 0.410 (budget 0.5)" in bits_ax.get_title()
    assert share_ax.get_ylabel() == "share of latency (%)"
    assert [round(bar.get_height(), 6) for bar in share_ax.patches] == [10.0, 20.0, 30.0, 40.0]
    assert bits_ax.get_ylim()[0] < 0  # activations drawn below the axis


def test_policy_bits_of_a_weight_only_policy_has_no_activation_half(tmp_path):
    p = policy([[8, -1], [3, -1], [2, -1]], {"latency": None, "flash": 0.1})
    fig = plot_policy_bits(p, tmp_path / "b.png")
    (ax,) = fig.axes
    assert ax.get_ylim()[0] == 0 and ax.get_ylabel() == "weight bits"
    assert "size ratio" in ax.get_title() and "flash" not in ax.get_title()
    ticks = [t for t in ax.get_yticks() if 0 <= t <= 9]
    assert all(float(t).is_integer() for t in ticks)


def test_policy_bits_refuses_mismatched_shares(tmp_path):
    p = policy([[8, -1], [4, 3]], {"latency": 0.5})
    with pytest.raises(ValueError, match="cost_shares has 3 entries"):
        plot_policy_bits(p, tmp_path / "b.png", cost_shares=[0.2, 0.3, 0.5])


def test_finetune_curves_mark_the_validation_choice(tmp_path):
    path = tmp_path / "metrics.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["epoch", "train_loss", "train_top1", "val_top1", "test_top1", "lr", "epoch_time_s"])
        for epoch, (loss, val, test) in enumerate([(1.0, 80, 79), (0.5, 88, 90), (0.4, 86, 91)], start=1):
            w.writerow([epoch, loss, val + 1, val, test, 0.01, 1.0])
    fig = plot_finetune_curves(path, tmp_path / "f.png", title="W4A4")
    loss_ax, acc_ax = fig.axes
    assert loss_ax.get_ylabel() == "training loss" and acc_ax.get_ylabel() == "top-1 (%)"
    chosen = labelled_lines(acc_ax, "best.pt")
    assert chosen and chosen[0].get_xdata()[0] == 2  # validation picks epoch 2, not the test-best epoch 3


def test_latency_table_heat_maps_name_every_layer(tmp_path):
    table = np.arange(3 * 64, dtype=float).reshape(3, 8, 8) + 1.0
    fig = plot_latency_table(table, tmp_path / "t.png", ["a", "b", "c"], columns=2)
    titled = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title().split("\n")[0] for ax in titled] == ["a", "b", "c"]
    assert any("relative" in ax.get_ylabel() for ax in fig.axes)  # the shared colour bar
    with pytest.raises(ValueError, match=r"\[layers, 8, 8\]"):
        plot_latency_table(np.ones((3, 4, 4)), tmp_path / "x.png")


def test_pareto_front_has_three_labelled_panels_and_the_budget(tmp_path):
    trials = [{"accuracy": 80 + i, "latency_ratio": 0.2 + 0.1 * i, "flash_ratio": 0.9 - 0.1 * i} for i in range(6)]
    fig = plot_pareto_front(trials, trials[2:], tmp_path / "front.png", budgets={"latency": 0.5, "flash": None})
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert len(panels) == 3
    assert {(ax.get_xlabel(), ax.get_ylabel()) for ax in panels} == {
        ("latency ratio", "validation top-1 (%)"),
        ("flash ratio", "validation top-1 (%)"),
        ("latency ratio", "flash ratio"),
    }
    assert sum(bool(labelled_lines(ax, "latency budget")) for ax in panels) == 2


def test_strategy_curves_are_steps_with_a_title(tmp_path):
    curves = {"random": [[-np.inf, 1.0, 2.0], [0.5, 0.5]], "greedy": [[1.0, 3.0, 3.0]]}
    fig = plot_strategy_curves(curves, tmp_path / "c.png")
    (ax,) = fig.axes
    assert ax.get_title() and ax.get_xlabel() == "policy evaluations"
    lines = [line for line in ax.get_lines() if "seed" in line.get_label()]
    assert [line.get_label() for line in lines] == ["random (2 seeds)", "greedy (1 seed)"]
    assert all(line.get_drawstyle() == "steps-post" for line in lines)
    assert list(lines[0].get_ydata()) == [0.5, 0.75, 1.25]
