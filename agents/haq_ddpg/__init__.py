"""HAQ's DDPG agent (Wang et al., CVPR 2019) and its search loop for Box-action Gymnasium envs."""

from agents.haq_ddpg.ddpg import (
    HAQDDPG,
    EpisodeResult,
    HAQDDPGConfig,
    ReplayBuffer,
    train_haq_ddpg,
    update_baseline,
)

__all__ = [
    "HAQDDPG",
    "EpisodeResult",
    "HAQDDPGConfig",
    "ReplayBuffer",
    "train_haq_ddpg",
    "update_baseline",
]
