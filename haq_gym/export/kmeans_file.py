"""The k-means model file: per layer a float32 codebook and bit-packed centroid indices.

This is what HAQ's model-size budget measures, written out: a layer clustered to
``2**b`` shared values stores ``b`` bits per weight (packed with
:mod:`haq_gym.export.bitpack`, unsigned) plus its codebook. Its size is the cost model's
``flash_bits / 8`` plus the overhead reported by :func:`kmeans_file_overhead`: the header,
the per-layer records, the codebooks (``4 * 2**b`` bytes each) and at most 7 padding bits
per layer; :mod:`haq_gym.cost.kmeans_size` computes it without writing. Codebooks are
float32 so that the reader rebuilds exactly the weights the search evaluated. Biases and
BatchNorm parameters are not part of it (HAQ's model size excludes them too); they stay in
the float checkpoint.

Layout (little-endian)::

    magic     8 bytes  b"HAQKMEAN"
    version   u16      1
    n_layers  u16
    n_layers records:
        name_len u16, name (UTF-8)
        bits u8 (1..8), ndim u8, shape: ndim x u32
        codebook: 2**bits x float32
        indices:  ceil(numel * bits / 8) bytes (bitpack layout, unsigned)
    crc32     u32      of every byte before it
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from haq_gym.cost.kmeans_size import (  # noqa: F401  (the format's size, re-exported)
    kmeans_file_overhead,
    kmeans_file_size,
)
from haq_gym.export.bitpack import pack, packed_size, unpack
from haq_gym.export.file_io import read_bytes
from haq_gym.quant.kmeans_quantizer import KMeansWeightQuantizer
from haq_gym.quant.qlayers import QuantLayerMixin
from haq_gym.util import write_atomic

MAGIC = b"HAQKMEAN"
VERSION = 1
_HEAD = struct.Struct("<8sHH")
_CRC = struct.Struct("<I")


@dataclass(frozen=True)
class KMeansLayer:
    """One layer of a k-means model: ``weight = codebook[indices].reshape(shape)``."""

    name: str
    bits: int
    shape: tuple[int, ...]
    codebook: np.ndarray
    indices: np.ndarray

    def __post_init__(self) -> None:
        if not 1 <= self.bits <= 8:
            raise ValueError(f"layer {self.name!r}: bits must be in 1..8, got {self.bits}")
        if self.codebook.shape != (2**self.bits,):
            raise ValueError(
                f"layer {self.name!r}: a {self.bits}-bit codebook has {2**self.bits} entries, "
                f"got shape {self.codebook.shape}"
            )
        if self.indices.size != self.numel:
            raise ValueError(
                f"layer {self.name!r}: shape {self.shape} needs {self.numel} indices, got {self.indices.size}"
            )

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def weight(self) -> np.ndarray:
        """The float32 weight this layer encodes."""
        return self.codebook.astype(np.float32)[self.indices.reshape(-1).astype(np.int64)].reshape(self.shape)


def encode_kmeans(layers: Sequence[KMeansLayer]) -> bytes:
    """The file's bytes for ``layers``."""
    if len(layers) > 0xFFFF:
        raise ValueError(f"a k-means file holds at most 65535 layers, got {len(layers)}")
    parts = [_HEAD.pack(MAGIC, VERSION, len(layers))]
    for layer in layers:
        name = layer.name.encode("utf-8")
        if len(name) > 0xFFFF:
            raise ValueError(f"layer name too long ({len(name)} bytes): {layer.name[:40]!r}...")
        parts.append(
            struct.pack(
                f"<H{len(name)}sBB{len(layer.shape)}I", len(name), name, layer.bits, len(layer.shape), *layer.shape
            )
        )
        parts.append(np.ascontiguousarray(layer.codebook, dtype="<f4").tobytes())
        parts.append(pack(np.asarray(layer.indices).astype(np.int64), layer.bits, signed=False))
    body = b"".join(parts)
    return body + _CRC.pack(zlib.crc32(body))


class _Reader:
    """Bounds-checked reads from a byte buffer; every failure names the source and the offset."""

    def __init__(self, data: bytes, source: str) -> None:
        self.data, self.source, self.pos = data, source, 0

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError(
                f"{self.source} is truncated: {what} needs {n} bytes at offset {self.pos}, "
                f"only {len(self.data) - self.pos} left"
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str) -> tuple[Any, ...]:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))


def decode_kmeans(data: bytes, source: str = "k-means file") -> list[KMeansLayer]:
    """Parse a k-means file's bytes; raises ``ValueError`` for a wrong, truncated or corrupt file."""
    if len(data) < _HEAD.size + _CRC.size:
        raise ValueError(
            f"{source} is truncated: {len(data)} bytes, less than the {_HEAD.size + _CRC.size}-byte header and checksum"
        )
    magic, version, n_layers = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise ValueError(f"{source} is not a haq-gym k-means file (magic {magic!r}, expected {MAGIC!r})")
    if version != VERSION:
        raise ValueError(f"{source} has k-means file version {version}; this haq-gym reads version {VERSION}")
    body, (crc,) = data[: -_CRC.size], _CRC.unpack(data[-_CRC.size :])
    if zlib.crc32(body) != crc:
        raise ValueError(f"{source} is corrupt or truncated: its CRC32 checksum does not match its contents")
    reader = _Reader(body, source)
    reader.pos = _HEAD.size
    layers = []
    for i in range(n_layers):
        (name_len,) = reader.unpack("<H", f"layer {i} name length")
        name = reader.take(name_len, f"layer {i} name").decode("utf-8")
        bits, ndim = reader.unpack("<BB", f"layer {name!r} bits")
        if not 1 <= bits <= 8:
            raise ValueError(f"{source}: layer {name!r} has {bits} bits; expected 1..8")
        shape = reader.unpack(f"<{ndim}I", f"layer {name!r} shape")
        numel = int(np.prod(shape, dtype=np.int64))
        codebook = np.frombuffer(reader.take(4 * 2**bits, f"layer {name!r} codebook"), dtype="<f4").astype(np.float32)
        indices = unpack(reader.take(packed_size(numel, bits), f"layer {name!r} indices"), bits, numel, signed=False)
        layers.append(KMeansLayer(name, bits, tuple(shape), codebook, indices.astype(np.uint8)))
    if reader.pos != len(body):
        raise ValueError(f"{source} has {len(body) - reader.pos} unexpected bytes after its {n_layers} layers")
    return layers


def write_kmeans_file(path: str | os.PathLike[str], layers: Sequence[KMeansLayer]) -> int:
    """Write ``layers`` atomically; returns the file size in bytes."""
    data = encode_kmeans(layers)
    write_atomic(path, data)
    return len(data)


def read_kmeans_file(path: str | os.PathLike[str]) -> list[KMeansLayer]:
    """Read a k-means file written by :func:`write_kmeans_file`."""
    data = read_bytes(path, "k-means file")
    return decode_kmeans(data, source=f"k-means file {os.fspath(path)!r}")


def kmeans_layers(named_layers: Sequence[tuple[str, QuantLayerMixin]]) -> list[KMeansLayer]:
    """The k-means records of wrapped layers whose weight quantizer is a k-means quantizer with bits set.

    The codebook holds the current cluster means, so finetuned shared values are exported
    as they are.
    """
    out = []
    for name, layer in named_layers:
        quantizer = layer.weight_quantizer
        if not isinstance(quantizer, KMeansWeightQuantizer) or quantizer.bits is None:
            raise ValueError(
                f"layer {name!r} has no k-means weight quantizer with a bit width "
                f"(found {type(quantizer).__name__}, bits={getattr(quantizer, 'bits', None)})"
            )
        codebook, labels = quantizer.codebook(layer.weight)
        out.append(KMeansLayer(name, int(quantizer.bits), tuple(layer.weight.shape), codebook.numpy(), labels.numpy()))
    return out


def load_kmeans_weights(named_layers: Sequence[tuple[str, QuantLayerMixin]], layers: Sequence[KMeansLayer]) -> None:
    """Copy the weights of ``layers`` into the matching float layers (names and shapes must agree)."""
    if len(layers) != len(named_layers):
        raise ValueError(f"the file has {len(layers)} layers but the model has {len(named_layers)} quantizable layers")
    for (name, module), record in zip(named_layers, layers, strict=True):
        if record.name != name or tuple(module.weight.shape) != record.shape:
            raise ValueError(
                f"file layer {record.name!r} {record.shape} does not match model layer {name!r} "
                f"{tuple(module.weight.shape)}"
            )
        with torch.no_grad():
            module.weight.copy_(torch.from_numpy(record.weight()))
