"""Gymnasium ids of the haq-gym environments.

Gymnasium 1.x has no plugin entry points, so ``import haq_gym`` registers these ids
(``gym.make("haq_gym:HAQ-MobileNetV2-v0")`` imports it for you). Entry points are lazy
strings: the core never imports the environment classes.
"""

from __future__ import annotations

import gymnasium as gym

ENV_IDS = {
    "HAQ-MobileNetV2-v0": ("envs.linear_quantize_env:LinearQuantizeEnv", {"model": "mobilenetv2"}),
}


def register_envs() -> None:
    """Register every id once (re-importing is harmless)."""
    for env_id, (entry_point, kwargs) in ENV_IDS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point, kwargs=kwargs)
