"""Agent zoo for haq-gym: search agents that drive the quantization environments."""

from agents.haq_ddpg import HAQDDPG, EpisodeResult, HAQDDPGConfig, train_haq_ddpg

__all__ = ["HAQDDPG", "EpisodeResult", "HAQDDPGConfig", "train_haq_ddpg"]
