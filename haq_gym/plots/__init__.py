"""Figures of a run: the policy's bits per layer and the search's progress."""

from haq_gym.plots.policy_bits import plot_policy_bits
from haq_gym.plots.search_progress import plot_search_progress

__all__ = ["plot_policy_bits", "plot_search_progress"]
