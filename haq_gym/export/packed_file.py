"""The packed model file: every layer's weight codes at exactly its bit width, a small header, and the integer model.

Layout (all integers little-endian; full description in ``docs/integer_export.md``)::

    offset  size  field
    0       4     magic b"HQPK"
    4       1     format version (1)
    5       1     flags: bit 0 = an integer-model section follows the weights
    6       2     layer count L (u16)
    8       4     weight payload bytes P (u32)
    12      4     integer-model section bytes I (u32, 0 without it)
    16      4     CRC-32 (zlib) of the whole file with these 4 bytes left out
    20      ...   layer table, L records: 1 descriptor byte (bits 0-3 bit width 2..8,
                  bit 4 signed, bit 5 log8 format, bits 6-7 ndim - 1), ndim dimensions as
                  unsigned LEB128 varints, then 4 bytes: the weight step as float32 (linear
                  layers) or the log8 maximum exponent ``top`` as int32 (log8 layers)
    ...     P     weight payload: the codes of all layers, layer after layer, each in C
                  order of its weight tensor, as one LSB-first bit stream (the layout of
                  :mod:`haq_gym.export.bitpack`: element i of a b-bit layer at stream bits
                  i*b .. i*b+b-1, stream bit k = bit k%8 of byte k//8; two's complement for
                  signed codes); no padding between layers, the last byte zero-padded;
                  so P = ceil(sum_i count_i * bits_i / 8)
    ...     I     integer-model section (optional): u32 JSON length J, J bytes of UTF-8
                  JSON (ops, grids, layer names), then the int32 arrays the JSON refers to
                  (biases, multipliers, shifts), little-endian

The header (20 bytes + the layer table) plus P is what a device must store for the
weights: P is the flash cost model's ``sum(weights * w_bit) / 8`` rounded up to a byte,
so the file without the integer section exceeds the cost model by exactly the header.
Reading checks every length, width and the CRC, and raises :class:`PackedFileError`
with what was expected instead of returning a wrong model.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from haq_gym.export import bitpack
from haq_gym.export.file_io import read_bytes
from haq_gym.export.integer_model import (
    AddOp,
    ConvOp,
    HardSwishOp,
    IntegerLayer,
    IntegerModel,
    MulOp,
    Op,
    PoolOp,
    ReluOp,
    Requant,
    RequantOp,
    ShortcutOp,
)
from haq_gym.quant.grid import QuantGrid
from haq_gym.quant.log_quantizer import log8_to_linear
from haq_gym.util import write_atomic

MAGIC = b"HQPK"
VERSION = 1
FIXED_HEADER = 20
FLAG_INTEGER_MODEL = 0x01
_FIXED = struct.Struct("<4sBBHIII")
INTEGER_FORMAT = "haq-gym-integer-model"


class PackedFileError(ValueError):
    """A packed file is truncated, corrupted, inconsistent or uses an unsupported feature."""


@dataclass
class PackedLayer:
    """One layer's weights as stored: ``codes`` int16 of ``shape`` at ``bits`` bits."""

    shape: tuple[int, ...]
    bits: int
    signed: bool
    fmt: str  # "linear" or "log8"
    step: float  # linear: the float32 step; log8: 0.0
    top: int  # log8: the maximum exponent on the 1/16 grid; linear: 0
    codes: np.ndarray

    @property
    def count(self) -> int:
        return int(np.prod(self.shape))


@dataclass
class FileSizes:
    """Bytes of each part of a packed file."""

    header: int
    weights: int
    integer_model: int
    bias: int = 0  # of integer_model: the int32 biases
    requant: int = 0  # of integer_model: multipliers and shifts

    @property
    def total(self) -> int:
        return self.header + self.weights + self.integer_model

    @property
    def flash(self) -> int:
        """What the weights cost on a device: header and payload."""
        return self.header + self.weights


@dataclass
class PackedFile:
    layers: list[PackedLayer]
    sizes: FileSizes
    integer_spec: dict[str, Any] | None = None
    arrays: list[np.ndarray] = field(default_factory=list)


# ---------------------------------------------------------------------- writing
def write_packed_file(
    path: str | os.PathLike[str], model: IntegerModel, include_integer_model: bool = True, overwrite: bool = True
) -> FileSizes:
    """Write ``model``'s weights (and, by default, the rest of the integer model) atomically.

    ``overwrite=False`` refuses an existing ``path`` (``FileExistsError``), even one created meanwhile.
    """
    data, sizes = encode(model.layers, model if include_integer_model else None)
    write_atomic(path, data, overwrite=overwrite)
    return sizes


def encode(layers: Sequence[IntegerLayer], model: IntegerModel | None = None) -> tuple[bytes, FileSizes]:
    """The bytes of a file holding ``layers``' weights, plus ``model``'s integer section if given."""
    if len(layers) > 0xFFFF:
        raise PackedFileError(f"{len(layers)} layers do not fit the u16 layer count")
    table = b"".join(_layer_record(layer) for layer in layers)
    payload = _pack_stream(layers)
    section, bias_bytes, requant_bytes = _integer_section(model) if model is not None else (b"", 0, 0)
    fixed = _FIXED.pack(
        MAGIC, VERSION, FLAG_INTEGER_MODEL if model is not None else 0, len(layers), len(payload), len(section), 0
    )
    body = table + payload + section
    crc = zlib.crc32(body, zlib.crc32(fixed[:16]))
    data = fixed[:16] + struct.pack("<I", crc) + body
    return data, FileSizes(FIXED_HEADER + len(table), len(payload), len(section), bias_bytes, requant_bytes)


def _layer_record(layer: IntegerLayer) -> bytes:
    shape = tuple(layer.codes.shape)
    if not 1 <= len(shape) <= 4:
        raise PackedFileError(f"layer {layer.name!r}: weights of {len(shape)} dimensions (1..4 supported)")
    bitpack.value_range(layer.bits, layer.signed)  # raises for an unsupported width
    log8 = layer.fmt == "log8"
    desc = layer.bits | (0x10 if layer.signed else 0) | (0x20 if log8 else 0) | ((len(shape) - 1) << 6)
    scale = struct.pack("<i", layer.log_max) if log8 else struct.pack("<f", layer.step)
    return bytes([desc]) + b"".join(_varint(d) for d in shape) + scale


def _pack_stream(layers: Sequence[IntegerLayer]) -> bytes:
    """All layers' codes as one bit stream (each layer's bitpack stream, padding dropped, concatenated)."""
    streams = []
    for layer in layers:
        codes = layer.codes.numpy().astype(np.int64)
        raw = np.frombuffer(bitpack.pack(codes, layer.bits, layer.signed), dtype=np.uint8)
        streams.append(np.unpackbits(raw, bitorder="little")[: codes.size * layer.bits])
    bits = np.concatenate(streams) if streams else np.zeros(0, dtype=np.uint8)
    return np.packbits(bits, bitorder="little").tobytes()


def _varint(value: int) -> bytes:
    if value < 0:
        raise PackedFileError(f"negative dimension {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _integer_section(model: IntegerModel) -> tuple[bytes, int, int]:
    """JSON + int32 blob of everything but the weights; also the bias and requant byte counts."""
    arrays: list[np.ndarray] = []
    sizes = {"bias": 0, "requant": 0}

    def ref(t: torch.Tensor, kind: str) -> int:
        a = t.numpy().astype(np.int64)
        if a.size and (a.min() < -(2**31) or a.max() >= 2**31):
            raise PackedFileError("an integer-model array does not fit int32")
        arrays.append(a.astype("<i4"))
        sizes[kind] += 4 * a.size
        return len(arrays) - 1

    def requant(r: Requant) -> dict[str, Any]:
        return {"multiplier": ref(r.multiplier, "requant"), "shift": ref(r.shift, "requant"), "lo": r.lo, "hi": r.hi}

    ops = []
    for op in model.ops:
        if isinstance(op, ConvOp):
            ops.append(
                {
                    "op": "conv",
                    "kind": op.kind,
                    "layer": op.layer,
                    "src": op.src,
                    "dst": op.dst,
                    "bias": ref(op.bias, "bias"),
                    "bias_shift": op.bias_shift,
                    "requant": None if op.requant is None else requant(op.requant),
                    "stride": op.stride,
                    "padding": op.padding,
                    "groups": op.groups,
                    "input_offset": None if op.input_offset is None else list(op.input_offset),
                }
            )
        elif isinstance(op, AddOp):
            ops.append({"op": "add", "a": op.a, "b": op.b, "dst": op.dst})
        elif isinstance(op, ReluOp):
            ops.append({"op": "relu", "src": op.src, "dst": op.dst})
        elif isinstance(op, ShortcutOp):
            ops.append(
                {
                    "op": "shortcut",
                    "src": op.src,
                    "dst": op.dst,
                    "stride": op.stride,
                    "front": op.front,
                    "back": op.back,
                }
            )
        elif isinstance(op, HardSwishOp):
            ops.append(
                {
                    "op": "hardswish",
                    "src": op.src,
                    "dst": op.dst,
                    "gate": requant(op.gate),
                    "gate_bits": op.gate_bits,
                    "requant": requant(op.out),
                }
            )
        elif isinstance(op, MulOp):
            ops.append(
                {"op": "mul", "a": op.a, "b": op.b, "dst": op.dst, "add": op.add, "requant": requant(op.requant)}
            )
        elif isinstance(op, PoolOp):
            ops.append(
                {
                    "op": "pool",
                    "src": op.src,
                    "dst": op.dst,
                    "add": op.add,
                    "requant": requant(op.requant),
                    "keepdim": op.keepdim,
                }
            )
        else:
            ops.append({"op": "requant", "src": op.src, "dst": op.dst, "add": op.add, "requant": requant(op.requant)})
    spec = {
        "format": INTEGER_FORMAT,
        "version": 1,
        "layers": [{"name": w.name, "step": w.step, "log_frac_bits": w.log_frac_bits} for w in model.layers],
        "input_grid": _grid_dict(model.input_grid),
        "input": model.input_name,
        "output": model.output_name,
        "output_step": model.output_step,
        "grids": {k: _grid_dict(g) for k, g in model.grids.items()},
        "layer_inputs": model.layer_inputs,
        "ops": ops,
        "meta": model.meta,
        "arrays": [int(a.size) for a in arrays],
    }
    text = json.dumps(spec, separators=(",", ":")).encode()
    blob = b"".join(a.tobytes() for a in arrays)
    return struct.pack("<I", len(text)) + text + blob, sizes["bias"], sizes["requant"]


def _grid_dict(g: QuantGrid) -> dict[str, Any]:
    return {"step": g.step, "qmin": g.qmin, "qmax": g.qmax, "offset": g.offset}


# ---------------------------------------------------------------------- reading
def read_packed_file(path: str | os.PathLike[str]) -> PackedFile:
    """Read and validate a packed file (see the module doc for every check)."""
    data = read_bytes(path, "packed file")
    try:
        return decode(data)
    except PackedFileError as err:
        raise PackedFileError(f"{os.fspath(path)}: {err}") from None


def decode(data: bytes) -> PackedFile:
    """Parse the bytes of a packed file; raises :class:`PackedFileError` on any inconsistency."""
    if len(data) < FIXED_HEADER:
        raise PackedFileError(f"truncated: {len(data)} bytes, shorter than the {FIXED_HEADER}-byte fixed header")
    magic, version, flags, count, payload_len, section_len, crc = _FIXED.unpack_from(data)
    if magic != MAGIC:
        raise PackedFileError(f"not a haq-gym packed file (magic {magic!r}, expected {MAGIC!r})")
    if version != VERSION:
        raise PackedFileError(f"format version {version}; this reader supports version {VERSION}")
    if flags & ~FLAG_INTEGER_MODEL:
        raise PackedFileError(f"unknown flags 0x{flags:02x}")
    if bool(flags & FLAG_INTEGER_MODEL) != (section_len > 0):
        raise PackedFileError(
            f"flags say the integer-model section is "
            f"{'present' if flags & FLAG_INTEGER_MODEL else 'absent'} "
            f"but the header gives it {section_len} bytes"
        )
    pos = FIXED_HEADER
    records = []
    for i in range(count):
        record, pos = _read_record(data, pos, i)
        records.append(record)
    header_len = pos
    expected_payload = (sum(int(np.prod(r[0])) * r[1] for r in records) + 7) // 8
    if payload_len != expected_payload:
        raise PackedFileError(
            f"header disagrees with its layer table: the {count} layers need {expected_payload} "
            f"payload bytes, the header declares {payload_len}"
        )
    expected_total = header_len + payload_len + section_len
    if len(data) != expected_total:
        what = "truncated" if len(data) < expected_total else "has trailing data"
        raise PackedFileError(f"{what}: the header describes {expected_total} bytes, the file has {len(data)}")
    actual_crc = zlib.crc32(data[FIXED_HEADER:], zlib.crc32(data[:16]))
    if actual_crc != crc:
        raise PackedFileError(f"corrupted: CRC-32 is 0x{actual_crc:08x}, the header records 0x{crc:08x}")
    layers = _unpack_stream(data[header_len : header_len + payload_len], records)
    sizes = FileSizes(header_len, payload_len, section_len)
    packed = PackedFile(layers, sizes)
    if section_len:
        packed.integer_spec, packed.arrays = _read_section(data[header_len + payload_len :], count)
        try:
            packed.sizes.bias, packed.sizes.requant = _section_sizes(packed.integer_spec, packed.arrays)
        except (KeyError, IndexError, TypeError) as err:
            raise PackedFileError(f"malformed integer-model section ({type(err).__name__}: {err})") from None
    return packed


LayerRecord = tuple[tuple[int, ...], int, bool, str, float, int]
"""One layer-table record: shape, bits, signed, format, step, log8 top code."""


def _read_record(data: bytes, pos: int, index: int) -> tuple[LayerRecord, int]:
    if pos >= len(data):
        raise PackedFileError(f"truncated in the layer table (record {index})")
    desc = data[pos]
    pos += 1
    bits, signed, log8, ndim = desc & 0x0F, bool(desc & 0x10), bool(desc & 0x20), (desc >> 6) + 1
    try:
        bitpack.value_range(bits, signed)
    except ValueError:
        raise PackedFileError(
            f"layer {index}: unsupported bit width {bits} "
            f"({'signed' if signed else 'unsigned'}; the format stores 2..8 bits)"
        ) from None
    if log8 and (bits != 8 or signed):
        raise PackedFileError(f"layer {index}: a log8 layer must be stored as unsigned 8-bit codes")
    shape = []
    for _ in range(ndim):
        value, shift = 0, 0
        while True:
            if pos >= len(data):
                raise PackedFileError(f"truncated in the layer table (record {index})")
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
            if shift > 35:
                raise PackedFileError(f"layer {index}: malformed dimension")
        if value == 0:
            raise PackedFileError(f"layer {index}: a dimension of 0")
        shape.append(value)
    if pos + 4 > len(data):
        raise PackedFileError(f"truncated in the layer table (record {index})")
    if log8:
        step, top = 0.0, struct.unpack_from("<i", data, pos)[0]
    else:
        step, top = float(struct.unpack_from("<f", data, pos)[0]), 0
        if not (step > 0 and np.isfinite(step)):
            raise PackedFileError(f"layer {index}: step {step!r} is not positive and finite")
    return (tuple(shape), bits, signed, "log8" if log8 else "linear", step, top), pos + 4


def _unpack_stream(payload: bytes, records: list[LayerRecord]) -> list[PackedLayer]:
    stream = np.unpackbits(np.frombuffer(payload, dtype=np.uint8), bitorder="little")
    layers, offset = [], 0
    for shape, bits, signed, fmt, step, top in records:
        count = int(np.prod(shape))
        chunk = np.packbits(stream[offset : offset + count * bits], bitorder="little").tobytes()
        codes = bitpack.unpack(chunk, bits, count, signed).reshape(shape)
        layers.append(PackedLayer(shape, bits, signed, fmt, step, top, codes))
        offset += count * bits
    if stream[offset:].any():
        raise PackedFileError("corrupted: the payload's padding bits are not zero")
    return layers


def _read_section(section: bytes, count: int) -> tuple[dict[str, Any], list[np.ndarray]]:
    if len(section) < 4:
        raise PackedFileError("truncated integer-model section")
    (text_len,) = struct.unpack_from("<I", section)
    if 4 + text_len > len(section):
        raise PackedFileError(f"integer-model section declares {text_len} bytes of JSON, has {len(section) - 4}")
    try:
        spec = json.loads(section[4 : 4 + text_len].decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PackedFileError(f"integer-model section is not valid JSON: {err}") from None
    if not isinstance(spec, dict) or spec.get("format") != INTEGER_FORMAT or spec.get("version") != 1:
        raise PackedFileError(f"integer-model section is not format {INTEGER_FORMAT!r} version 1")
    sizes = spec.get("arrays")
    if not isinstance(sizes, list) or not all(isinstance(s, int) and s >= 0 for s in sizes):
        raise PackedFileError("integer-model section has no valid array list")
    blob = section[4 + text_len :]
    if len(blob) != 4 * sum(sizes):
        raise PackedFileError(f"integer-model arrays need {4 * sum(sizes)} bytes, the section has {len(blob)}")
    arrays, offset = [], 0
    for size in sizes:
        arrays.append(np.frombuffer(blob, dtype="<i4", count=size, offset=offset).astype(np.int64))
        offset += 4 * size
    if len(spec.get("layers", [])) != count:
        raise PackedFileError(
            f"integer-model section describes {len(spec.get('layers', []))} layers, the layer table {count}"
        )
    return spec, arrays


def _section_sizes(spec: dict[str, Any], arrays: list[np.ndarray]) -> tuple[int, int]:
    bias = requant = 0
    for op in spec["ops"]:
        if op["op"] == "conv":
            bias += 4 * arrays[op["bias"]].size
        for key in ("requant", "gate"):
            if op.get(key):
                requant += 4 * (arrays[op[key]["multiplier"]].size + arrays[op[key]["shift"]].size)
    return bias, requant


# ---------------------------------------------------------------------- integer model from a file
def load_integer_model(path: str | os.PathLike[str]) -> IntegerModel:
    """Rebuild the :class:`IntegerModel` stored in a packed file (weights from the payload)."""
    packed = read_packed_file(path)
    if packed.integer_spec is None:
        raise PackedFileError(f"{os.fspath(path)}: holds weights only (no integer-model section)")
    try:
        return integer_model_from(packed)
    except (KeyError, IndexError, TypeError, ValueError) as err:
        raise PackedFileError(
            f"{os.fspath(path)}: malformed integer-model section ({type(err).__name__}: {err})"
        ) from None


def _check_conv_spec(d: dict[str, Any], n_layers: int) -> None:
    """Refuse convolution parameters no exported model has (a crafted or damaged file): stride 0, negative padding..."""
    for key, low in (("stride", 1), ("padding", 0), ("groups", 1)):
        value = d[key]
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= low):
            raise ValueError(f"conv {key} must be an integer >= {low}, got {value!r}")
    layer = d["layer"]
    if not (isinstance(layer, int) and 0 <= layer < n_layers):
        raise ValueError(f"conv layer index must be in 0..{n_layers - 1}, got {layer!r}")


def integer_model_from(packed: PackedFile) -> IntegerModel:
    spec, arrays = packed.integer_spec, packed.arrays
    if spec is None:
        raise PackedFileError("the file holds weights only (no integer-model section)")

    def tensor(index: int) -> torch.Tensor:
        return torch.from_numpy(arrays[index].copy())

    def requant(d: dict[str, Any]) -> Requant:
        return Requant(tensor(d["multiplier"]), tensor(d["shift"]), int(d["lo"]), int(d["hi"]))

    layers = []
    for stored, desc in zip(packed.layers, spec["layers"], strict=True):
        codes = torch.from_numpy(stored.codes.astype(np.int32))
        if stored.fmt == "log8":
            linear, step = log8_to_linear(codes, stored.top, int(desc["log_frac_bits"]))
            layers.append(
                IntegerLayer(
                    desc["name"], codes, 8, False, step, "log8", stored.top, int(desc["log_frac_bits"]), linear
                )
            )
        else:
            layers.append(IntegerLayer(desc["name"], codes, stored.bits, stored.signed, float(desc["step"])))
    ops: list[Op] = []
    for d in spec["ops"]:
        if d["op"] == "conv":
            _check_conv_spec(d, len(layers))
            offset = None if d["input_offset"] is None else (int(d["input_offset"][0]), int(d["input_offset"][1]))
            ops.append(
                ConvOp(
                    d["kind"],
                    int(d["layer"]),
                    d["src"],
                    d["dst"],
                    tensor(d["bias"]).to(torch.int32),
                    int(d["bias_shift"]),
                    None if d["requant"] is None else requant(d["requant"]),
                    int(d["stride"]),
                    int(d["padding"]),
                    int(d["groups"]),
                    offset,
                )
            )
        elif d["op"] == "add":
            ops.append(AddOp(d["a"], d["b"], d["dst"]))
        elif d["op"] == "relu":
            ops.append(ReluOp(d["src"], d["dst"]))
        elif d["op"] == "shortcut":
            ops.append(ShortcutOp(d["src"], d["dst"], int(d["stride"]), int(d["front"]), int(d["back"])))
        elif d["op"] == "requant":
            ops.append(RequantOp(d["src"], d["dst"], int(d["add"]), requant(d["requant"])))
        elif d["op"] == "pool":
            keepdim = d.get("keepdim", False)
            if not isinstance(keepdim, bool):
                raise ValueError(f"pool keepdim must be true or false, got {keepdim!r}")
            ops.append(PoolOp(d["src"], d["dst"], int(d["add"]), requant(d["requant"]), keepdim))
        elif d["op"] == "hardswish":
            ops.append(HardSwishOp(d["src"], d["dst"], requant(d["gate"]), int(d["gate_bits"]), requant(d["requant"])))
        elif d["op"] == "mul":
            ops.append(MulOp(d["a"], d["b"], d["dst"], int(d["add"]), requant(d["requant"])))
        else:
            raise ValueError(f"unknown op {d['op']!r}")

    def grid(g: dict[str, Any]) -> QuantGrid:
        return QuantGrid(float(g["step"]), int(g["qmin"]), int(g["qmax"]), float(g["offset"]))

    return IntegerModel(
        grid(spec["input_grid"]),
        layers,
        ops,
        {k: grid(g) for k, g in spec["grids"].items()},
        dict(spec["layer_inputs"]),
        spec["input"],
        spec["output"],
        float(spec["output_step"]),
        dict(spec["meta"]),
    )
