import numpy as np
import pytest

from haq_gym.export.bitpack import pack, packed_size, unpack, value_range


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("bits", range(2, 9))
def test_round_trip_random_and_extremes(bits, signed):
    lo, hi = value_range(bits, signed)
    rng = np.random.default_rng(bits)
    values = np.concatenate([[lo, hi, lo, hi, 0], rng.integers(lo, hi + 1, size=997)])
    data = pack(values, bits, signed)
    assert len(data) == packed_size(values.size, bits) == (values.size * bits + 7) // 8
    np.testing.assert_array_equal(unpack(data, bits, values.size, signed), values)


def test_four_bit_layout_is_low_nibble_first():
    # -8 and 7 at 4 bits (seed 000's C example): two's complement 0x8 in the low nibble, 0x7 high.
    assert pack(np.array([-8, 7]), 4, signed=True) == bytes([0x78])
    assert pack(np.array([1, -1, 3]), 4, signed=True) == bytes([0xF1, 0x03])
    assert pack(np.array([1, 2, 3, 0]), 2, signed=False) == bytes([0b00111001])


def test_three_bit_values_straddle_bytes():
    values = np.array([-4, 3, -1, 2, 1, 0, -2, -3])
    data = pack(values, 3, signed=True)
    assert len(data) == 3
    bits = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")
    assert bits[6:9].tolist() == [1, 1, 1]  # element 2 (-1 = 0b111) crosses bytes 0 and 1
    np.testing.assert_array_equal(unpack(data, 3, 8, signed=True), values)


def test_out_of_range_and_bad_width_are_rejected():
    with pytest.raises(ValueError, match=r"outside the 4-bit signed range \[-8, 7\]"):
        pack(np.array([8]), 4, signed=True)
    with pytest.raises(ValueError, match="supported widths"):
        pack(np.array([0]), 9, signed=False)
    with pytest.raises(TypeError, match="integer array"):
        pack(np.array([0.5]), 4, signed=True)


def test_truncated_data_is_rejected():
    data = pack(np.arange(-4, 4), 3, signed=True)
    with pytest.raises(ValueError, match="need 3 bytes, got 2"):
        unpack(data[:2], 3, 8, signed=True)
