"""The policy JSON artifact."""

from __future__ import annotations

import json

import pytest

from haq_gym.policy import PolicyFile

NAMES = ["features.0.0", "features.1.conv.0.0", "classifier.1"]


def make() -> PolicyFile:
    return PolicyFile(
        model="mobilenetv2",
        dataset="digits",
        layer_names=NAMES,
        bits=[[8, -1], [4, 5], [8, 8]],
        costs={"latency_ratio": 0.4},
        found_by={"algo": "haq-ddpg"},
    )


def test_round_trip(tmp_path) -> None:
    path = tmp_path / "p.json"
    make().save(path)
    data = json.loads(path.read_text())
    assert data["format"] == "haq-gym-policy" and data["layers"][1] == {"name": NAMES[1], "w_bit": 4, "a_bit": 5}
    loaded = PolicyFile.load(path)
    assert loaded.bits == [[8, -1], [4, 5], [8, 8]] and loaded.layer_names == NAMES
    assert loaded.found_by["algo"] == "haq-ddpg"


def test_check_layers_names_the_mismatch() -> None:
    p = make()
    p.check_layers(NAMES, min_bit=2, max_bit=8)
    with pytest.raises(ValueError, match="3 layers but the model has 2"):
        p.check_layers(NAMES[:2])
    with pytest.raises(ValueError, match=r"policy layer 1 is 'features\.1\.conv\.0\.0'"):
        p.check_layers([NAMES[0], "other", NAMES[2]])
    with pytest.raises(ValueError, match=r"supported range is 5\.\.8"):
        p.check_layers(NAMES, min_bit=5, max_bit=8)


def test_bad_files(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.json"):
        PolicyFile.load(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        PolicyFile.load(bad)
    bad.write_text(json.dumps({"layers": []}))
    with pytest.raises(ValueError, match="not a haq-gym policy"):
        PolicyFile.load(bad)
    with pytest.raises(ValueError, match=r"\[w_bit, a_bit\]"):
        PolicyFile(model="m", dataset="d", layer_names=["a"], bits=[[4, 0]])


def test_uniform_bits_pins_the_first_and_last_layers() -> None:
    from haq_gym.policy import uniform_bits

    assert uniform_bits(4, 3, 2) == [[8, -1], [3, 2], [3, 2], [8, 8]]
    bits = uniform_bits(3, 4, 4)
    bits[1][0] = 7  # rows are independent lists, not one shared row
    assert bits == [[8, -1], [7, 4], [8, 8]] and uniform_bits(3, 4, 4)[1] == [4, 4]
    with pytest.raises(ValueError, match="at least 2 layers"):
        uniform_bits(1, 4, 4)
