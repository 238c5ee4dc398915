"""Every reward formula of haq_gym.rewards against values computed by hand."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from haq_gym.cost import Costs
from haq_gym.rewards import REWARDS, autoq_reward, get_reward, haq_flash_reward, haq_reward, releq_reward

# A cost model whose reference costs are 200 (latency) and 10 (flash bits): q = (lat + 120 * flash) / 1400.
REFERENCE = SimpleNamespace(reference_latency=200.0, reference_flash=10)


def costs(latency: float = 100.0, flash_bits: int = 5, latency_ratio: float = 0.5, flash_ratio: float = 0.5) -> Costs:
    return Costs(
        latency=latency,
        flash_bits=flash_bits,
        bitops=0,
        latency_ratio=latency_ratio,
        flash_ratio=flash_ratio,
        bitops_ratio=0.0,
    )


def test_haq_is_a_tenth_of_the_accuracy_change() -> None:
    assert haq_reward(72.5, 70.0, costs(), REFERENCE) == pytest.approx(0.25)
    assert haq_reward(61.0, 70.0, costs(), REFERENCE) == pytest.approx(-0.9)


def test_haq_flash_adds_a_bonus_for_small_weights() -> None:
    # 0.1 * (70 - 70 + 0.75 / 0.5) = 0.15;  0.1 * (68 - 70 + 0.75 / 0.75) = -0.1
    assert haq_flash_reward(70.0, 70.0, costs(flash_ratio=0.5), REFERENCE) == pytest.approx(0.15)
    assert haq_flash_reward(68.0, 70.0, costs(flash_ratio=0.75), REFERENCE) == pytest.approx(-0.1)


def test_releq_shapes_cost_and_accuracy_and_falls_back_below_40_percent() -> None:
    cheap = costs(latency=43.75, flash_bits=0)  # q = 43.75 / 1400 = 1/32, so q**0.2 = 0.5
    assert releq_reward(80.0, 80.0, cheap, REFERENCE) == pytest.approx(0.5)  # s = 1: (1 - 0.5) * 1**0.4
    # s = 0.5: (1 - 0.5) * 0.5**(0.4 / 0.5) = 0.5 * 2**-0.8 = 0.287174588...
    assert releq_reward(40.0, 80.0, cheap, REFERENCE) == pytest.approx(0.28717458874925877, rel=1e-12)
    # q counts flash 120 times: latency 20 + 120 * 10 bits = 1220 -> q = 1220 / 1400
    assert releq_reward(80.0, 80.0, costs(latency=20.0, flash_bits=10), REFERENCE) == pytest.approx(
        1.0 - (1220.0 / 1400.0) ** 0.2
    )
    assert releq_reward(24.0, 80.0, cheap, REFERENCE) == pytest.approx(-5.6)  # s = 0.3 < 0.4: 0.1 * (24 - 80)
    assert releq_reward(5.0, 0.0, cheap, REFERENCE) == pytest.approx(0.5)  # no reference accuracy: HAQ's, 0.1 * 5


def test_autoq_is_the_log_of_squared_accuracy_over_the_cost_geometric_mean() -> None:
    # log(50**2 / sqrt(0.25 * 0.25)) = log(10000) = 4 ln 10
    assert autoq_reward(50.0, 70.0, costs(latency_ratio=0.25, flash_ratio=0.25), REFERENCE) == pytest.approx(
        4 * math.log(10), rel=1e-12
    )
    # log(10**2 / sqrt(0.5 * 0.125)) = log(100 / 0.25) = log(400)
    assert autoq_reward(10.0, 70.0, costs(latency_ratio=0.5, flash_ratio=0.125), REFERENCE) == pytest.approx(
        math.log(400), rel=1e-12
    )
    # zero accuracy is floored at 1e-6: log(1e-12)
    assert autoq_reward(0.0, 70.0, costs(latency_ratio=1.0, flash_ratio=1.0), REFERENCE) == pytest.approx(
        -12 * math.log(10), rel=1e-12
    )


def test_rewards_are_found_by_name() -> None:
    assert set(REWARDS) == {"haq", "haq_flash", "haq_inverse_cost", "releq", "autoq"}
    assert get_reward("releq") is releq_reward
    with pytest.raises(
        ValueError, match="unknown reward 'nope'; expected one of haq, haq_inverse_cost, haq_flash, releq, autoq"
    ):
        get_reward("nope")
