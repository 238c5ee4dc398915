"""Size in bytes of a k-means model file: what HAQ's model-size budget costs, as a cost function.

The file (written by :mod:`haq_gym.export.kmeans_file`) stores per layer a float32
codebook of ``2**bits`` entries and the bit-packed centroid indices, plus a header, a
record per layer and a checksum. This module owns the size arithmetic so that the k-means
search can report a policy's exact file size without importing the export format; the
writer checks against it that every file it writes has exactly this size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

HEADER_BYTES = 8 + 2 + 2  # magic, version, layer count
CHECKSUM_BYTES = 4
CODEBOOK_ENTRY_BYTES = 4  # float32


def record_header_bytes(name: str, ndim: int) -> int:
    """A layer record before its codebook: name length, UTF-8 name, bits, ndim, one u32 per dimension."""
    return 2 + len(name.encode("utf-8")) + 2 + 4 * ndim


def packed_index_bytes(count: int, bits: int) -> int:
    """Bytes of ``count`` indices of ``bits`` bits, packed and padded to a whole byte."""
    if count < 0:
        raise ValueError(f"count must be non-negative, got {count}")
    return (count * bits + 7) // 8


def kmeans_file_size(layers: Sequence[tuple[str, Sequence[int], int]]) -> int:
    """Exact size in bytes of the k-means file of ``(name, weight shape, bits)`` layers."""
    size = HEADER_BYTES + CHECKSUM_BYTES
    for name, shape, bits in layers:
        size += record_header_bytes(name, len(shape)) + CODEBOOK_ENTRY_BYTES * 2**bits
        size += packed_index_bytes(int(np.prod(shape, dtype=np.int64)), bits)
    return size


def kmeans_file_overhead(layers: Sequence[tuple[str, Sequence[int], int]]) -> float:
    """Bytes beyond ``sum(numel * bits) / 8``: header, records, codebooks, checksum and padding."""
    bits_total = sum(int(np.prod(shape, dtype=np.int64)) * bits for _, shape, bits in layers)
    return kmeans_file_size(layers) - bits_total / 8
