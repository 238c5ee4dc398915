"""Reader of the idx files that MNIST and Fashion-MNIST are distributed in.

An idx file is a 4-byte big-endian magic number (two zero bytes, a dtype code, the number
of dimensions), one big-endian uint32 per dimension, then the values in row-major order.
Both datasets use unsigned bytes: images are ``[N, rows, cols]`` (magic 0x00000803) and
labels ``[N]`` (magic 0x00000801).

Why our own reader: it lets tests feed generated files through the exact loading path,
and it checks the structure strictly (magic, dtype code, dimensions, and a payload of
exactly the declared size), so a truncated or foreign file fails with a message instead
of yielding misshaped data. Compression is detected from the gzip magic bytes, never
from the file name or the gzip header (Debian's copies have rewritten gzip headers), and
uncompressed files are read as they are.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np
import torch

GZIP_MAGIC = b"\x1f\x8b"
UBYTE_CODE = 0x08
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
# Names of the dtype codes the format defines, to say what a foreign file holds.
_DTYPE_NAMES = {
    0x08: "unsigned byte",
    0x09: "signed byte",
    0x0B: "int16",
    0x0C: "int32",
    0x0D: "float32",
    0x0E: "float64",
}


def read_idx_bytes(path: str | os.PathLike[str]) -> bytes:
    """Return the file's content, gunzipped when it starts with the gzip magic bytes 0x1f 0x8b.

    A corrupt or truncated gzip stream raises ValueError naming the file.
    """
    with open(path, "rb") as handle:
        data = handle.read()
    if data[:2] != GZIP_MAGIC:
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as error:
        raise ValueError(
            f"{path}: starts with the gzip magic bytes 0x1f 0x8b but is not a complete gzip stream ({error})"
        ) from error


def read_idx(path: str | os.PathLike[str], magic: int) -> np.ndarray:
    """Read an unsigned-byte idx file whose magic number must be ``magic``; returns a uint8 array.

    The array has one axis per dimension declared in the header and is writable. Raises
    ValueError naming the file and what was expected vs found when the magic number,
    dtype code or dimensions are wrong, or when the payload is not exactly the product of
    the dimensions in bytes.
    """
    ndim = magic & 0xFF
    data = read_idx_bytes(path)
    header_size = 4 + 4 * ndim
    if len(data) < 4:
        raise ValueError(f"{path}: expected an idx file with magic 0x{magic:08x}, found only {len(data)} bytes")
    found = int.from_bytes(data[:4], "big")
    if data[0] != 0 or data[1] != 0:
        raise ValueError(
            f"{path}: not an idx file: expected magic 0x{magic:08x} (two zero bytes, dtype code, "
            f"dimension count), found 0x{found:08x}"
        )
    if data[2] != UBYTE_CODE:
        kind = _DTYPE_NAMES.get(data[2], "unknown")
        raise ValueError(
            f"{path}: expected dtype code 0x{UBYTE_CODE:02x} (unsigned byte, magic 0x{magic:08x}), "
            f"found 0x{data[2]:02x} ({kind})"
        )
    if data[3] != ndim:
        raise ValueError(
            f"{path}: expected {ndim} dimension(s) (magic 0x{magic:08x}), found {data[3]} (magic 0x{found:08x})"
        )
    if len(data) < header_size:
        raise ValueError(
            f"{path}: header truncated: expected {header_size} bytes for {ndim} dimension(s), found {len(data)}"
        )
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = math.prod(shape)
    payload = len(data) - header_size
    if payload != expected:
        problem = "truncated" if payload < expected else "trailing bytes"
        raise ValueError(
            f"{path}: payload {problem}: dimensions {'x'.join(map(str, shape))} need exactly "
            f"{expected} bytes after the {header_size}-byte header, found {payload}"
        )
    images: np.ndarray = np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(shape).copy()
    return images


def read_idx_images(path: str | os.PathLike[str]) -> torch.Tensor:
    """Read an idx image file (magic 0x00000803) into a uint8 tensor [N, rows, cols]."""
    return torch.from_numpy(read_idx(Path(path), IMAGES_MAGIC))


def read_idx_labels(path: str | os.PathLike[str]) -> torch.Tensor:
    """Read an idx label file (magic 0x00000801) into a uint8 tensor [N]."""
    return torch.from_numpy(read_idx(Path(path), LABELS_MAGIC))
