"""The k-means model file: exact round trip, size equal to the cost model's figure plus overhead, clear errors."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

from haq_gym.cost import BitSerialAccelerator, CostModel, measure_layers
from haq_gym.export.kmeans_file import (
    KMeansLayer,
    decode_kmeans,
    encode_kmeans,
    kmeans_file_overhead,
    kmeans_file_size,
    kmeans_layers,
    load_kmeans_weights,
    read_kmeans_file,
    write_kmeans_file,
)
from haq_gym.models import build_model
from haq_gym.quant import apply_policy, wrap_model
from haq_gym.quant.kmeans_quantizer import use_kmeans_weights


@pytest.fixture
def clustered():
    torch.manual_seed(0)
    model = build_model("resnet20", 10, width_mult=0.25)
    named = wrap_model(model)
    model.eval()
    use_kmeans_weights([m for _, m in named])
    bits = [(i % 8) + 1 for i in range(len(named))]  # every width 1..8, odd sizes straddle bytes
    apply_policy([m for _, m in named], [[b, -1] for b in bits])
    return model, named, bits


def test_round_trip_rebuilds_the_evaluated_weights_exactly(clustered, tmp_path) -> None:
    _model, named, bits = clustered
    path = tmp_path / "model.haqkm"
    size = write_kmeans_file(path, kmeans_layers(named))
    assert path.stat().st_size == size
    layers = read_kmeans_file(path)
    assert [r.name for r in layers] == [n for n, _ in named] and [r.bits for r in layers] == bits
    for (_name, module), record in zip(named, layers, strict=True):
        assert record.codebook.dtype == np.float32
        assert torch.equal(torch.from_numpy(record.weight()), module.weight_quantizer(module.weight))
    fresh = build_model("resnet20", 10, width_mult=0.25)
    fresh_named = wrap_model(fresh)
    load_kmeans_weights(fresh_named, layers)
    for (_, a), (_, b) in zip(named, fresh_named, strict=True):
        assert torch.equal(b.weight, a.weight_quantizer(a.weight))


def test_file_size_is_the_cost_models_size_plus_overhead(clustered, tmp_path) -> None:
    model, named, bits = clustered
    size = write_kmeans_file(tmp_path / "m.haqkm", kmeans_layers(named))
    specs = [(n, tuple(m.weight.shape), b) for (n, m), b in zip(named, bits, strict=True)]
    infos = measure_layers(model, named, 32)
    cost = CostModel(infos, BitSerialAccelerator().table(infos), flash_reference_bit=32)
    flash_bytes = cost.costs([[b, -1] for b in bits]).flash_bits / 8
    assert size == kmeans_file_size(specs) == pytest.approx(flash_bytes + kmeans_file_overhead(specs))
    codebooks = sum(4 * 2**b for b in bits)
    headers = 12 + 4 + sum(2 + len(n) + 2 + 4 * len(shape) for n, shape, _ in specs)
    padding = size - flash_bytes - codebooks - headers
    assert 0 <= padding < len(specs)  # each layer's indices end on a byte boundary


def test_truncated_corrupt_and_foreign_files_raise(clustered, tmp_path) -> None:
    _, named, _ = clustered
    data = encode_kmeans(kmeans_layers(named))
    assert len(decode_kmeans(data)) == len(named)
    for cut in (5, 40, len(data) // 2, len(data) - 1):
        with pytest.raises(ValueError, match="truncated"):
            decode_kmeans(data[:cut])
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x10
    with pytest.raises(ValueError, match="corrupt"):
        decode_kmeans(bytes(flipped))
    with pytest.raises(ValueError, match="not a haq-gym k-means file"):
        decode_kmeans(b"PK\x03\x04" + data[4:])
    newer = bytearray(data)
    newer[8:10] = struct.pack("<H", 2)
    with pytest.raises(ValueError, match="version 2"):
        decode_kmeans(bytes(newer))
    with pytest.raises(FileNotFoundError, match=r"nope\.haqkm"):
        read_kmeans_file(tmp_path / "nope.haqkm")
    records = kmeans_layers(named)
    with pytest.raises(ValueError, match="does not match model layer"):
        load_kmeans_weights(named, records[1:] + records[:1])


def test_record_validation_and_unclustered_layers(clustered) -> None:
    with pytest.raises(ValueError, match="4 entries"):
        KMeansLayer("x", 2, (3,), np.zeros(3, np.float32), np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match="needs 6 indices"):
        KMeansLayer("x", 1, (2, 3), np.zeros(2, np.float32), np.zeros(5, np.uint8))
    plain = wrap_model(build_model("resnet20", 10, width_mult=0.25))
    with pytest.raises(ValueError, match="no k-means weight quantizer"):
        kmeans_layers(plain[:1])
