"""check_known_keys: one message for every component that rejects settings it does not take."""

from __future__ import annotations

import pytest

from haq_gym.util import check_known_keys


def test_known_keys_pass() -> None:
    check_known_keys("ppo", {"gamma": 1.0}, {"gamma", "n_steps"})
    check_known_keys("random", {}, frozenset())


def test_unknown_keys_are_named_sorted_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"^ppo does not take hyperparameter\(s\) b, z; it takes gamma, n_steps$"):
        check_known_keys("ppo", {"z": 1, "gamma": 1.0, "b": 2}, {"n_steps", "gamma"})
    with pytest.raises(ValueError, match=r"^random does not take hyperparameter\(s\) seed; it takes none$"):
        check_known_keys("random", {"seed": 1}, frozenset())
    with pytest.raises(ValueError, match=r"^configs/ppo.yml does not take key\(s\) x; it takes default$"):
        check_known_keys("configs/ppo.yml", ["x"], ["default"], what="key")
