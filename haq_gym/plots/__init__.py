"""Figures: a search run, its best policy, a finetune, a latency table, a Pareto front, a strategy benchmark."""

from haq_gym.plots.cost_axis import CostAxis, budgeted_axis
from haq_gym.plots.finetune_curves import plot_finetune_curves
from haq_gym.plots.latency_table import plot_latency_table
from haq_gym.plots.pareto import plot_pareto_front
from haq_gym.plots.policy_bits import plot_policy_bits
from haq_gym.plots.search_progress import plot_search_progress
from haq_gym.plots.strategy_curves import plot_strategy_curves

__all__ = [
    "CostAxis",
    "budgeted_axis",
    "plot_finetune_curves",
    "plot_latency_table",
    "plot_pareto_front",
    "plot_policy_bits",
    "plot_search_progress",
    "plot_strategy_curves",
]
