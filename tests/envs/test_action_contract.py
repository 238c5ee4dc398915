"""Actions outside the action space's contract are refused with the env's own message, never coerced."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest


@pytest.fixture(scope="module")
def envs(tiny_env_kwargs: dict) -> dict[str, gym.Env]:
    from haq_gym.search_setup import build_search_setup

    kw = {k: v for k, v in tiny_env_kwargs.items() if k != "progress"}
    setup = build_search_setup(**kw, progress=False)  # shared: one model for both modes
    out = {
        mode: gym.make("HAQ-MobileNetV2-v0", setup=setup, action_mode=mode).unwrapped
        for mode in ("discrete", "continuous")
    }
    for env in out.values():
        env.reset(seed=0)
    return out


@pytest.mark.parametrize(
    "action",
    [
        2.7,
        "3",
        True,
        np.bool_(True),
        [1, 2],
        np.array([1, 2]),
        None,
        float("nan"),
        float("inf"),
        np.array([2.0]),
        -1,
        7,
        np.array([[1, 2], [3, 4]]),
    ],
    ids=repr,
)
def test_discrete_actions_outside_the_contract(envs, action) -> None:
    with pytest.raises(ValueError, match=r"discrete action must be one integer in 0\.\.6, got"):
        envs["discrete"].action_to_bits(action)


@pytest.mark.parametrize(
    "action,bits", [(0, 2), (6, 8), (np.int64(3), 5), (np.array([4]), 6), (np.array(1), 3), ([2], 4)]
)
def test_discrete_actions_inside_the_contract(envs, action, bits) -> None:
    assert envs["discrete"].action_to_bits(action) == bits


@pytest.mark.parametrize(
    "action",
    [
        [0.1, 0.2],
        np.array([0.1, 0.2], dtype=np.float32),
        None,
        float("nan"),
        np.array([np.inf]),
        "0.5",
        True,
        np.array(["0.5"]),
    ],
    ids=repr,
)
def test_continuous_actions_outside_the_contract(envs, action) -> None:
    with pytest.raises(ValueError, match=r"continuous action must be one finite number in \[0, 1\]"):
        envs["continuous"].action_to_bits(action)


@pytest.mark.parametrize(
    "action,bits", [(0.0, 2), (1.0, 8), (np.array([0.5], dtype=np.float32), 5), (0.99, 8), (1.7, 8)]
)  # outside [0, 1] is clipped, as HAQ does
def test_continuous_actions_inside_the_contract(envs, action, bits) -> None:
    assert envs["continuous"].action_to_bits(action) == bits


def test_a_refused_action_changes_nothing(envs) -> None:
    env = envs["discrete"]
    env.reset(seed=0)
    with pytest.raises(ValueError, match="discrete action must be one integer"):
        env.step(2.7)
    _, _, terminated, _, info = env.step(3)
    assert not terminated and info["bits"] == 5 and env._step == 1
