"""Latency lookup tables in HAQ's format.

A table is an array of shape ``[n_layers, 8, 8]``: entry ``[i, w-1, a-1]`` is the latency
(any unit: cycles, microseconds) of layer ``i`` with ``w``-bit weights and ``a``-bit input
activations. It is stored as ``.npy`` so a measured table can replace the built-in one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from haq_gym.util import write_atomic

MAX_TABLE_BIT = 8


def validate_table(table: np.ndarray, n_layers: int, source: str = "latency table") -> np.ndarray:
    """Check shape and values; return the table as float64."""
    expected = (n_layers, MAX_TABLE_BIT, MAX_TABLE_BIT)
    if table.ndim != 3 or tuple(table.shape) != expected:
        raise ValueError(
            f"{source} has shape {tuple(table.shape)}; expected {expected} "
            f"([layer, w_bit-1, a_bit-1] for a model with {n_layers} quantizable layers)"
        )
    if np.asarray(table).dtype.kind not in "iuf":
        raise ValueError(f"{source} has dtype {np.asarray(table).dtype}; expected real numbers (float or int)")
    table = np.asarray(table, dtype=np.float64)
    if not np.all(np.isfinite(table)) or np.any(table < 0):
        raise ValueError(f"{source} has negative or non-finite entries")
    return table


def load_table(path: str | os.PathLike[str], n_layers: int) -> np.ndarray:
    """Load and validate a ``.npy`` table for a model with ``n_layers`` quantizable layers."""
    try:
        table = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"latency table {os.fspath(path)!r} does not exist") from None
    except ValueError as err:
        raise ValueError(f"latency table {os.fspath(path)!r} is not a readable .npy array: {err}") from None
    return validate_table(table, n_layers, source=f"latency table {os.fspath(path)!r}")


def save_table(table: np.ndarray, path: str | os.PathLike[str]) -> None:
    """Write a table to ``.npy`` atomically."""
    write_atomic(path, lambda fh: np.save(fh, np.asarray(table)))


HAQ_UNQUANTIZED_BIT = MAX_TABLE_BIT - 1
"""The bit width HAQ's cost of a ``-1`` (unquantized) entry amounts to: it indexes the table
with ``-1 - 1 = -2``, i.e. the second-to-last column of an 8-wide table, the 7-bit cost."""

UNQUANTIZED_COSTS = ("float_bit", "haq")


def unquantized_cost_bit(mode: str, float_bit: int) -> int:
    """The bit width a ``-1`` entry is costed at: ``float_bit`` (haq-gym) or 7 (HAQ's column -2, ``"haq"``)."""
    if mode == "float_bit":
        return float_bit
    if mode == "haq":
        return HAQ_UNQUANTIZED_BIT
    raise ValueError(f"unknown unquantized_cost {mode!r}; expected one of {', '.join(UNQUANTIZED_COSTS)}")


def policy_latency(table: np.ndarray, policy: Sequence[Sequence[int]], unquantized_bit: int) -> float:
    """Sum of the table entries of a ``[[w_bit, a_bit], ...]`` policy.

    A bit width of -1 (not quantized; the first layer's image input) is costed at
    ``unquantized_bit``: ``float_bit`` by default, 7 to reproduce HAQ, which indexes column
    ``-1 - 1 = -2`` there (see :func:`unquantized_cost_bit`).
    """
    total = 0.0
    for i, (w, a) in enumerate(policy):
        w = unquantized_bit if w == -1 else w
        a = unquantized_bit if a == -1 else a
        total += table[i, w - 1, a - 1]
    return float(total)
