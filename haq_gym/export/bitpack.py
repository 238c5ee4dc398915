"""Pack integers at exactly their bit width, and read them back.

Layout: a little-endian bit stream. Element ``i`` of a ``b``-bit array occupies stream
bits ``i*b .. i*b + b - 1`` (least significant bit first), and stream bit ``k`` is bit
``k % 8`` of byte ``k // 8``. At 4 bits this is the TFLite / ONNX int4 layout (element
``2i`` in the low nibble of byte ``i``, ``2i+1`` in the high nibble); at 2 bits element
``4i`` sits in bits 0-1; at 3, 5, 6 and 7 bits values straddle byte boundaries. Signed
values are stored in two's complement and sign-extended on reading. The last byte is
zero-padded, so ``n`` values take ``ceil(n * b / 8)`` bytes.
"""

from __future__ import annotations

import numpy as np

MIN_BITS = 1
MAX_BITS = 8


def value_range(bits: int, signed: bool) -> tuple[int, int]:
    """Smallest and largest integer a ``bits``-bit field holds."""
    _check_bits(bits, signed)
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def packed_size(count: int, bits: int) -> int:
    """Bytes taken by ``count`` values of ``bits`` bits."""
    if count < 0:
        raise ValueError(f"count must be non-negative, got {count}")
    return (count * bits + 7) // 8


def pack(values: np.ndarray, bits: int, signed: bool) -> bytes:
    """Pack an integer array (any shape, flattened in C order) into ``bits``-bit fields."""
    lo, hi = value_range(bits, signed)
    flat = np.asarray(values).reshape(-1)
    if flat.size and not np.issubdtype(flat.dtype, np.integer):
        raise TypeError(f"pack expects an integer array, got dtype {flat.dtype}")
    if flat.size and (flat.min() < lo or flat.max() > hi):
        raise ValueError(
            f"values span [{flat.min()}, {flat.max()}], outside the {bits}-bit "
            f"{'signed' if signed else 'unsigned'} range [{lo}, {hi}]"
        )
    fields = (flat.astype(np.int64) & ((1 << bits) - 1)).astype(np.uint8)
    stream = np.unpackbits(fields[:, None], axis=1, bitorder="little")[:, :bits]
    return np.packbits(stream.reshape(-1), bitorder="little").tobytes()


def unpack(data: bytes | bytearray | memoryview, bits: int, count: int, signed: bool) -> np.ndarray:
    """Read ``count`` values of ``bits`` bits back as ``int16`` (exact inverse of :func:`pack`).

    ``data`` must hold exactly ``packed_size(count, bits)`` bytes; anything else means a
    truncated or mismatched file and raises instead of returning a wrong array.
    """
    value_range(bits, signed)
    expected = packed_size(count, bits)
    raw = np.frombuffer(data, dtype=np.uint8)
    if raw.size != expected:
        raise ValueError(f"{count} values of {bits} bits need {expected} bytes, got {raw.size}")
    stream = np.unpackbits(raw, bitorder="little")[: count * bits].reshape(count, bits)
    weights = (1 << np.arange(bits, dtype=np.int16)).astype(np.int16)
    values = stream.astype(np.int16) @ weights
    if signed:
        values = np.where(values >= (1 << (bits - 1)), values - (1 << bits), values).astype(np.int16)
    return values.astype(np.int16)


def _check_bits(bits: int, signed: bool) -> None:
    low = 2 if signed else MIN_BITS
    if not isinstance(bits, (int, np.integer)) or not low <= bits <= MAX_BITS:
        raise ValueError(
            f"supported widths are {low}..{MAX_BITS} bits for {'signed' if signed else 'unsigned'} values, got {bits!r}"
        )
