"""Step counts in configs/*.yml are written in episodes and converted with the env's episode length."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agents.sb3.runner import steps_from_episodes

CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs"
# The step counts configs/*.yml held, as numbers, before they were written in episodes
# (the default env, HAQ-MobileNetV2-v0, has 102 decisions per episode).
STEPS_ON_THE_DEFAULT_ENV = {
    "a2c": {"n_steps": 102},
    "ddpg": {"learning_starts": 2040, "buffer_size": 13056},
    "dqn": {"learning_starts": 2040, "buffer_size": 13056},
    "maskable-ppo": {"n_steps": 510, "batch_size": 102},
    "ppo": {"n_steps": 510, "batch_size": 102},
    "sac": {"learning_starts": 2040, "buffer_size": 13056},
    "td3": {"learning_starts": 2040, "buffer_size": 13056},
    "tqc": {"learning_starts": 2040, "buffer_size": 13056},
    "trpo": {"n_steps": 510, "batch_size": 102},
}


@pytest.mark.parametrize("name", sorted(STEPS_ON_THE_DEFAULT_ENV))
def test_configs_resolve_to_the_same_steps_on_the_default_env_and_scale_with_length(name: str) -> None:
    table = yaml.safe_load((CONFIG_DIR / f"{name}.yml").read_text())
    for entry in table.values():
        resolved = steps_from_episodes(entry, 102)
        assert {k: resolved[k] for k in STEPS_ON_THE_DEFAULT_ENV[name]} == STEPS_ON_THE_DEFAULT_ENV[name]
        assert all(not isinstance(v, dict) or "episodes" not in v for v in resolved.values())
        on_36 = steps_from_episodes(entry, 36)  # a ResNet-20-sized env: same episodes, fewer steps
        assert {k: on_36[k] * 102 for k in STEPS_ON_THE_DEFAULT_ENV[name]} == {
            k: v * 36 for k, v in STEPS_ON_THE_DEFAULT_ENV[name].items()
        }


def test_other_values_pass_through_untouched() -> None:
    hyper = {
        "learning_starts": 5,
        "policy_kwargs": {"net_arch": [8]},
        "train_freq": [1, "episode"],
        "buffer_size": {"episodes": 0},
    }
    assert steps_from_episodes(hyper, 10) == {**hyper, "buffer_size": 0}
    assert hyper["buffer_size"] == {"episodes": 0}  # the input is not modified


@pytest.mark.parametrize("bad", [{"episodes": -1}, {"episodes": 2.5}, {"episodes": True}, {"episodes": 2, "steps": 1}])
def test_malformed_episode_counts_are_rejected(bad: dict) -> None:
    with pytest.raises(
        ValueError,
        match=r"hyperparameter n_steps: a step count in episodes is written "
        r"\{episodes: N\} with N a non-negative integer",
    ):
        steps_from_episodes({"n_steps": bad}, 102)
