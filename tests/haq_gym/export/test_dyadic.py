"""Dyadic multipliers and the half-to-even requantisation, checked against exact rational arithmetic."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from haq_gym.export.dyadic import (
    dyadic_value,
    requantize,
    requantize_wide,
    round_shift,
    to_dyadic,
    to_dyadic_array,
)

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def exact_round(x: int, m: int, n: int) -> int:
    """``round(x * m / 2**n)``, halves to even, in exact rationals (Python's round on a Fraction)."""
    return round(Fraction(x * m, 1) / Fraction(2) ** n)


def check(xs: list[int], m: int, n: int) -> None:
    x = torch.tensor(xs, dtype=torch.int32)
    got = requantize(x, m, n).tolist()
    want = [exact_round(v, m, n) for v in xs]
    assert got == want, f"m={m} n={n}"
    assert round_shift(x.to(torch.int64) * m, n).tolist() == want


@pytest.mark.parametrize("value", [1.0, 0.5, 2.0**-20, 8.0, -0.25, -(2.0**-7)])
def test_powers_of_two_become_pure_shifts(value: float) -> None:
    m, n = to_dyadic(value)
    assert abs(m) == 1 and dyadic_value(m, n) == value


def test_mantissa_is_odd_31_bit_and_within_half_an_ulp() -> None:
    rng = np.random.default_rng(0)
    for r in np.concatenate([rng.uniform(1e-6, 1.0, 300), -rng.uniform(1e-4, 100.0, 100), [0.75, 1 / 3, 0.1]]):
        m, n = to_dyadic(float(r))
        assert m % 2 == 1 and abs(m) < 2**31
        frac, _ = math.frexp(abs(r))
        # the 31-bit normalised mantissa is nearest: error at most half its last bit
        assert abs(Fraction(m) / Fraction(2) ** n - Fraction(float(r))) <= Fraction(abs(r)) / 2**31 / frac / 2
    assert to_dyadic(0.75) == (3, 2)
    assert to_dyadic(0.0) == (0, 0)
    mm, nn = to_dyadic_array(np.array([[0.5, 0.75], [-3.0, 0.0]]))
    assert mm.tolist() == [[1, 3], [-3, 0]] and nn.tolist() == [[1, 2], [0, 0]]


@pytest.mark.parametrize("bad", [math.inf, math.nan, 2.0**30, -(2.0**31), 1.2345e-12])
def test_unrepresentable_multipliers_raise(bad: float) -> None:
    with pytest.raises(ValueError, match=r"multiplier .* (as m \* 2\*\*-n|too large|too small)"):
        to_dyadic(bad)


def test_exact_division_by_powers_of_two() -> None:
    for n in (1, 5, 17, 31, 40):
        xs = [k << min(n, 20) for k in range(-50, 51)] if n <= 20 else list(range(-50, 51))
        check(xs, 1, min(n, 20))
        check(xs, 3, n)


def test_exact_halves_round_to_even_both_signs() -> None:
    # x / 2 for odd x: exactly half-way; small shifts (n < 32) take the general path.
    check(list(range(-21, 22)), 1, 1)
    check([-7, -5, -3, -1, 1, 3, 5, 7], 1, 1)  # -> -4, -2, -2, 0, 0, 2, 2, 4
    assert requantize(torch.tensor([-7, -5, -1, 1, 5, 7], dtype=torch.int32), 1, 1).tolist() == [-4, -2, 0, 0, 2, 4]
    check([k * 4 + 2 for k in range(-10, 10)], 1, 2)  # (4k + 2) / 4 = k + 1/2
    check([6, 10, -6, -10], 5, 2)  # 7.5, 12.5, -7.5, -12.5 -> 8, 12, -8, -12


def test_reference_table_of_lsq_md() -> None:
    # lsq.md 3.2's worked examples, half-to-even column: 5*0.25 -> 1, 1*0.5 -> 0, -7*0.5 -> -4, -1*0.375 -> 0.
    for x, real, want in [(5, 0.25, 1), (1, 0.5, 0), (-7, 0.5, -4), (-1, 0.375, 0)]:
        m, n = to_dyadic(real)
        assert requantize(torch.tensor([x], dtype=torch.int32), m, n).item() == want


def test_int32_extremes_and_large_shifts() -> None:
    xs = [INT32_MIN, INT32_MIN + 1, -1, 0, 1, INT32_MAX - 1, INT32_MAX]
    for m in (1, 3, 2**31 - 1, -(2**31 - 1), 1_431_655_765):
        for n in (0, 1, 31, 32, 33, 45, 62):
            check(xs, m, n)


def test_left_shifts_for_integer_multipliers() -> None:
    check([-1000, -1, 0, 1, 12345], 3, -4)
    assert requantize(torch.tensor([5], dtype=torch.int32), 1, -3).item() == 40


def test_random_against_exact_per_channel() -> None:
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.integers(INT32_MIN, INT32_MAX, size=(64, 8), dtype=np.int64)).to(torch.int32)
    reals = rng.uniform(1e-7, 2.0, size=8) * rng.choice([-1, 1], size=8)
    m, n = to_dyadic_array(reals)
    got = requantize(x, torch.from_numpy(m), torch.from_numpy(n))
    for c in range(8):
        assert got[:, c].tolist() == [exact_round(int(v), int(m[c]), int(n[c])) for v in x[:, c]]
    # mixed shifts: some channels below 33 (general path), some above (fast path)
    m2 = torch.tensor([1, 3, 2**30 + 1, 7])
    n2 = torch.tensor([1, 9, 40, 33])
    got = requantize(x[:, :4], m2, n2)
    for c in range(4):
        assert got[:, c].tolist() == [exact_round(int(v), int(m2[c]), int(n2[c])) for v in x[:, c]]


def test_requantize_rejects_non_int32() -> None:
    with pytest.raises(TypeError, match="int32"):
        requantize(torch.tensor([1.0]), 1, 1)
    with pytest.raises(TypeError, match="int64"):
        round_shift(torch.tensor([1], dtype=torch.int32), 1)


def test_wide_requantisation_is_exact_beyond_int64_products() -> None:
    """``round(p * m / 2**n)`` for 62-bit ``p``, 31-bit ``m`` and shifts 31..93: products up to 93 bits."""
    gen = np.random.default_rng(0)
    ps, ms, ns = [], [], []
    for _ in range(3000):
        n = int(gen.integers(31, 94))
        m = int(gen.integers(-(2**31) + 1, 2**31))
        p = int(gen.integers(-(2**62) + 1, 2**62)) if gen.random() < 0.5 else int(gen.integers(-(2**40), 2**40))
        ps.append(p), ms.append(m), ns.append(n)
    for n in (31, 32, 45, 62, 93):  # exact halves of both signs (m = 1: p = (2j + 1) * 2**(n-1))
        for j in (-3, -2, -1, 0, 1, 2):
            if abs((2 * j + 1) * 2 ** (n - 1)) < 2**62:
                ps.append((2 * j + 1) * 2 ** (n - 1)), ms.append(1), ns.append(n)
    got = requantize_wide(torch.tensor(ps), torch.tensor(ms), torch.tensor(ns)).tolist()
    assert got == [round(Fraction(p * m) / 2**n) for p, m, n in zip(ps, ms, ns, strict=True)]
    with pytest.raises(ValueError, match=r"shifts in 31\.\.93"):
        requantize_wide(torch.tensor([1]), 1, 30)
