"""The packed file: exact round trips at every width, the byte layout, sizes against the flash cost model, bad files."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch

from haq_gym.cost.layer_info import measure_layers
from haq_gym.cost.model_size import flash_bits
from haq_gym.export.build import export_integer_model
from haq_gym.export.integer_model import IntegerLayer
from haq_gym.export.packed_file import (
    FIXED_HEADER,
    PackedFileError,
    decode,
    encode,
    load_integer_model,
    read_packed_file,
    write_packed_file,
)

LAYERS = 53


def layer(name: str, codes: np.ndarray, bits: int, step: float = 0.125) -> IntegerLayer:
    return IntegerLayer(name, torch.from_numpy(codes.astype(np.int32)), bits, True, step)


def random_layers(seed: int = 0) -> list[IntegerLayer]:
    """One layer per width 2..8, odd element counts (so layers start mid-byte), extremes included."""
    rng = np.random.default_rng(seed)
    out = []
    for bits in range(2, 9):
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        shape = (3, 5, 3, 3) if bits % 2 else (7, 1, 3, 1)
        codes = rng.integers(lo, hi + 1, size=int(np.prod(shape)))
        codes[:4] = [lo, hi, lo, hi]
        out.append(layer(f"l{bits}", codes.reshape(shape), bits, step=0.5**bits))
    return out


def recrc(data: bytearray) -> bytes:
    """Fix up the CRC after an edit, so the structural checks (not the CRC) must catch it."""
    struct.pack_into("<I", data, 16, zlib.crc32(bytes(data[FIXED_HEADER:]), zlib.crc32(bytes(data[:16]))))
    return bytes(data)


def test_every_width_round_trips_exactly() -> None:
    layers = random_layers()
    data, sizes = encode(layers)
    back = decode(data)
    for want, got in zip(layers, back.layers, strict=True):
        assert got.shape == tuple(want.codes.shape) and got.bits == want.bits and got.signed
        np.testing.assert_array_equal(got.codes, want.codes.numpy())
        assert got.step == np.float32(want.step)
    total_bits = sum(w.codes.numel() * w.bits for w in layers)
    assert sizes.weights == (total_bits + 7) // 8  # one stream: no per-layer padding
    assert len(data) == sizes.header + sizes.weights and sizes.integer_model == 0


def test_byte_layout_is_low_nibble_first_twos_complement() -> None:
    # seed 000's C example: byte 0xEF holds -1 (low nibble 0xF) then -2 (high nibble 0xE).
    data, sizes = encode([layer("a", np.array([-1, -2, -8, 7]), 4)])
    payload = data[sizes.header :]
    assert payload == bytes([0xEF, 0x78])
    assert decode(data).layers[0].codes.tolist() == [-1, -2, -8, 7]
    # a 3-bit layer of 3 values (9 bits) then a 2-bit one: the second starts at bit 9, mid-byte
    data, sizes = encode([layer("a", np.array([-4, 3, -1]), 3), layer("b", np.array([1, -2]), 2)])
    bits = np.unpackbits(np.frombuffer(data[sizes.header :], np.uint8), bitorder="little")
    assert bits[:13].tolist() == [0, 0, 1, 1, 1, 0, 1, 1, 1, 1, 0, 0, 1]
    assert sizes.weights == 2


def test_header_is_small_and_file_is_flash_plus_header(make_quantized, digits) -> None:
    policy = [[4, -1]] + [[4, 4]] * (LAYERS - 2) + [[4, 8]]  # every weight at 4 bits
    model, named = make_quantized(policy, family="lsq")
    im = export_integer_model(model, named, digits["calib"])
    data, sizes = encode(im.layers)
    weights = sum(m.weight.numel() for _, m in named)
    infos = measure_layers(model, named, 32)
    assert flash_bits(infos, policy, 8) == weights * 4
    assert len(data) - weights * 4 / 8 == sizes.header < 600  # "within a few hundred bytes"
    with_model, full = encode(im.layers, im)
    assert full.weights == sizes.weights and full.header == sizes.header
    assert full.bias == 4 * sum(int(op.bias.numel()) for op in im.ops if hasattr(op, "bias"))
    assert len(with_model) == full.total


def test_integer_model_round_trips_through_the_file(make_quantized, digits, tmp_path) -> None:
    policy = [[8, -1]] + [[3, 5], [5, 3], [6, 7], [2, 8], [7, 6]] * 10 + [[4, 4]] + [[8, 8]]
    model, named = make_quantized(policy, family="lsq")
    im = export_integer_model(model, named, digits["calib"])
    path = tmp_path / "model.hqpk"
    sizes = write_packed_file(path, im)
    assert path.stat().st_size == sizes.total
    back = load_integer_model(path)
    assert read_packed_file(path).sizes == sizes
    for a, b in zip(im.layers, back.layers, strict=True):
        assert a.name == b.name and torch.equal(a.codes, b.codes) and a.bits == b.bits
    codes = im.quantize_input(digits["test_x"][:8])
    assert torch.equal(im.forward(codes)[0], back.forward(codes)[0])
    weights_only = tmp_path / "weights.hqpk"
    write_packed_file(weights_only, im, include_integer_model=False)
    with pytest.raises(PackedFileError, match="weights only"):
        load_integer_model(weights_only)


def test_truncated_and_corrupted_files_raise() -> None:
    data, sizes = encode(random_layers(1))
    for cut in (0, 10, FIXED_HEADER + 3, sizes.header, len(data) - 1):
        with pytest.raises(PackedFileError, match="truncated"):
            decode(data[:cut])
    with pytest.raises(PackedFileError, match="trailing data"):
        decode(data + b"\0")
    flipped = bytearray(data)
    flipped[sizes.header + 5] ^= 0x10
    with pytest.raises(PackedFileError, match="CRC"):
        decode(bytes(flipped))
    with pytest.raises(PackedFileError, match="not a haq-gym packed file"):
        decode(b"XXXX" + data[4:])
    bad_version = bytearray(data)
    bad_version[4] = 9
    with pytest.raises(PackedFileError, match="version 9"):
        decode(recrc(bad_version))


def test_header_that_disagrees_with_the_data_raises() -> None:
    data, sizes = encode([layer("a", np.arange(-8, 8).reshape(4, 4), 4)])
    # declared payload length off by one (CRC fixed up, so the length check must catch it)
    wrong = bytearray(data)
    struct.pack_into("<I", wrong, 8, sizes.weights + 1)
    with pytest.raises(PackedFileError, match="need 8 payload bytes, the header declares 9"):
        decode(recrc(wrong))
    # a dimension changed in the layer table: 4x4 -> 4x5 needs 10 bytes, the data has 8
    wrong = bytearray(data)
    wrong[FIXED_HEADER + 2] = 5
    with pytest.raises(PackedFileError, match="need 10 payload bytes"):
        decode(recrc(wrong))


@pytest.mark.parametrize("bits", [0, 1, 9, 15])
def test_unsupported_widths_raise_on_reading_and_writing(bits: int) -> None:
    data, _ = encode([layer("a", np.array([1, -1]), 4)])
    wrong = bytearray(data)
    wrong[FIXED_HEADER] = (wrong[FIXED_HEADER] & 0xF0) | bits
    with pytest.raises(PackedFileError, match=f"unsupported bit width {bits}"):
        decode(recrc(wrong))
    if bits:
        with pytest.raises(ValueError, match="supported widths"):
            encode([layer("a", np.array([0, 0]), bits)])


def test_missing_file_raises(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_packed_file(tmp_path / "nope.hqpk")
