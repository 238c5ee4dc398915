"""EpisodeRewardReplayBuffer: whole episodes, stored at their end, all with the final reward."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium import spaces

from agents.sb3 import EpisodeRewardReplayBuffer

OBS_SPACE = spaces.Box(0.0, 1.0, (3,), np.float32)
ACTION_SPACE = spaces.Box(0.0, 1.0, (1,), np.float32)


def make_buffer(size: int = 20) -> EpisodeRewardReplayBuffer:
    return EpisodeRewardReplayBuffer(size, OBS_SPACE, ACTION_SPACE, device="cpu")


def add_episode(
    buffer: EpisodeRewardReplayBuffer, rewards: list[float], start: int = 0, final_info: dict | None = None
) -> list[int]:
    """Add one episode whose step t has observation [start + t] * 3; returns the buffer size after each add."""
    sizes = []
    for t, reward in enumerate(rewards):
        last = t == len(rewards) - 1
        obs = np.full((1, 3), start + t, dtype=np.float32)
        buffer.add(
            obs,
            obs + 1,
            np.array([[0.1 * t]], dtype=np.float32),
            np.array([reward], dtype=np.float32),
            np.array([last]),
            [dict(final_info or {}) if last else {}],
        )
        sizes.append(buffer.size())
    return sizes


def test_episode_is_stored_at_its_end_with_the_final_reward() -> None:
    buffer = make_buffer()
    sizes = add_episode(buffer, [0.0, 0.0, 0.0, 0.0, -0.7])
    assert sizes == [0, 0, 0, 0, 5]  # nothing sampleable before the episode ends
    np.testing.assert_allclose(buffer.rewards[:5, 0], [-0.7] * 5, rtol=1e-6)
    np.testing.assert_array_equal(buffer.observations[:5, 0, 0], [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(buffer.next_observations[:5, 0, 0], [1, 2, 3, 4, 5])
    np.testing.assert_allclose(buffer.actions[:5, 0, 0], [0.0, 0.1, 0.2, 0.3, 0.4], rtol=1e-6)
    np.testing.assert_array_equal(buffer.dones[:5, 0], [0, 0, 0, 0, 1])
    assert buffer.pending == []
    batch = buffer.sample(8)
    np.testing.assert_allclose(batch.rewards.numpy(), -0.7, rtol=1e-6)


def test_second_episode_and_timeout_flag() -> None:
    buffer = make_buffer()
    add_episode(buffer, [0.0, 1.0])
    sizes = add_episode(buffer, [0.0, 0.0, 2.0], start=10, final_info={"TimeLimit.truncated": True})
    assert sizes == [2, 2, 5]
    np.testing.assert_allclose(buffer.rewards[:5, 0], [1.0, 1.0, 2.0, 2.0, 2.0])
    np.testing.assert_array_equal(buffer.timeouts[:5, 0], [0, 0, 0, 0, 1])
    buffer.add(np.zeros((1, 3)), np.zeros((1, 3)), np.zeros((1, 1)), np.zeros(1), np.array([False]), [{}])
    buffer.reset()
    assert buffer.size() == 0 and buffer.pending == []


def test_more_than_one_env_is_refused() -> None:
    with pytest.raises(ValueError, match="n_envs=1"):
        EpisodeRewardReplayBuffer(20, OBS_SPACE, ACTION_SPACE, device="cpu", n_envs=2)
