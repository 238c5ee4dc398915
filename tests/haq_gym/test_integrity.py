"""Checksums of checkpoint tensors: a flipped bit, NaN weights or random bytes are caught on load, never used."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from haq_gym.data import load_dataset
from haq_gym.finetune.checkpoint import load_qat_checkpoint, quantize_model, save_qat_checkpoint
from haq_gym.integrity import CheckpointCorrupt, seal, tensor_checksum
from haq_gym.models import build_model, load_checkpoint, save_checkpoint
from haq_gym.models.checkpoint import default_checkpoint_path, ensure_default_checkpoint
from haq_gym.models.pretrain import FloatRecipe
from haq_gym.policy import PolicyFile, uniform_bits


def flip_one_bit_in_a_weight(path: os.PathLike, key: str) -> None:
    """Flip the lowest mantissa bit of the first element of tensor ``key``, in place in the file's bytes.

    The flip lands in the tensor's data record of torch's zip file (torch does not check
    those bytes on load), exactly what a damaged disk or copy does.
    """
    data = torch.load(path, weights_only=True)
    state = data["state_dict"]
    value = state[key].reshape(-1)[:1].clone()
    needle = value.numpy().tobytes()
    raw = bytearray(Path(path).read_bytes())
    at = raw.find(needle)
    assert at >= 0, "tensor bytes not found"
    raw[at] ^= 0x01
    Path(path).write_bytes(bytes(raw))


def tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("mobilenetv2", 10, width_mult=0.35)


def test_checksum_covers_every_tensor_and_its_key() -> None:
    payload = {"a": torch.ones(3), "nested": {"b": [torch.zeros(2), 5]}}
    base = tensor_checksum(payload)
    assert tensor_checksum({"a": torch.ones(3), "nested": {"b": [torch.zeros(2), 5]}}) == base
    assert tensor_checksum({"a": torch.ones(3), "nested": {"b": [torch.tensor([0.0, 1e-45]), 5]}}) != base
    assert tensor_checksum({"z": torch.ones(3), "nested": {"b": [torch.zeros(2), 5]}}) != base
    assert seal(payload)["checksum"]["tensors"] == base


def test_bit_flipped_float_checkpoint_is_refused(tmp_path) -> None:
    path = tmp_path / "float.pt"
    save_checkpoint(path, tiny_model(), {"test_top1": 50.0})
    load_checkpoint(path, tiny_model(1))
    flip_one_bit_in_a_weight(path, "features.0.0.weight")
    with pytest.raises(CheckpointCorrupt, match=r"checkpoint is corrupt: .*float\.pt \(the tensors do not match"):
        load_checkpoint(path, tiny_model(1))


def test_nan_weights_are_corruption_not_divergence(tmp_path) -> None:
    model = tiny_model()
    with torch.no_grad():
        model.classifier[-1].weight[0, 0] = float("nan")
    path = tmp_path / "nan.pt"
    save_checkpoint(path, model, {})
    with pytest.raises(CheckpointCorrupt, match=r"checkpoint is corrupt: .*nan\.pt \(tensor state_dict/classifier"):
        load_checkpoint(path, tiny_model(1))


@pytest.mark.parametrize("content", [os.urandom(4096), b"", b"PK\x03\x04" + bytes(100)])
def test_random_bytes_are_a_corrupt_checkpoint(tmp_path, content) -> None:
    path = tmp_path / "random.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointCorrupt, match=r"checkpoint is corrupt: .*random\.pt"):
        load_checkpoint(path, tiny_model())


def test_bit_flipped_qat_checkpoint_is_refused(tmp_path) -> None:
    from haq_gym.quant import wrap_model

    model = tiny_model()
    names = [n for n, _ in wrap_model(build_model("mobilenetv2", 10, width_mult=0.35))]
    policy_bits = uniform_bits(len(names), 4, 4)
    policy = PolicyFile("mobilenetv2", "digits", names, policy_bits, model_kwargs={"width_mult": 0.35})
    quantize_model(model, policy, "lsq")
    path = tmp_path / "qat.pt"
    save_qat_checkpoint(path, model, policy, "lsq", {"model": "mobilenetv2", "width_mult": 0.35, "num_classes": 10})
    assert load_qat_checkpoint(path).policy.bits == policy_bits
    flip_one_bit_in_a_weight(path, "classifier.1.weight")
    with pytest.raises(CheckpointCorrupt, match="checkpoint is corrupt"):
        load_qat_checkpoint(path)


def test_bit_flipped_agent_checkpoint_is_refused(tmp_path) -> None:
    import numpy as np
    from gymnasium import spaces

    from agents.haq_ddpg.ddpg import HAQDDPG, HAQDDPGConfig

    def agent(seed: int) -> HAQDDPG:
        return HAQDDPG(
            spaces.Box(0, 1, (14,), np.float32),
            spaces.Box(0, 1, (1,), np.float32),
            HAQDDPGConfig(hidden1=8, hidden2=8),
            seed=seed,
        )

    saved = agent(0)
    path = tmp_path / "agent.pt"
    saved.save(path)
    agent(1).load(path)
    raw = bytearray(path.read_bytes())
    needle = saved.actor.state_dict()["fc1.weight"].reshape(-1)[:1].numpy().tobytes()
    raw[raw.find(needle)] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointCorrupt, match=r"checkpoint is corrupt: .*agent\.pt"):
        agent(1).load(path)


def test_legacy_checkpoint_without_checksum_still_loads(tmp_path) -> None:
    model = tiny_model()
    path = tmp_path / "legacy.pt"
    torch.save({"state_dict": model.state_dict(), "meta": {"note": "before checksums"}}, path)
    assert load_checkpoint(path, tiny_model(1)) == {"note": "before checksums"}


def test_corrupted_cached_default_model_is_detected_and_retrained(monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.setenv("HAQ_GYM_CACHE", str(tmp_path))
    import haq_gym.models.checkpoint as ck

    trained = []
    monkeypatch.setattr(ck, "train_float", lambda model, *a, **k: trained.append(1) or 12.5)
    recipe = FloatRecipe(epochs=1, batch_size=256)
    bundle = load_dataset("digits")
    args = ("mobilenetv2", 0.35, "digits")
    ensure_default_checkpoint(*args, tiny_model(), bundle, recipe=recipe, progress=False, min_accuracy=None)
    path = default_checkpoint_path(*args, recipe, 0)
    flip_one_bit_in_a_weight(path, "features.0.0.weight")
    _, meta = ensure_default_checkpoint(*args, tiny_model(), bundle, recipe=recipe, progress=False, min_accuracy=None)
    assert len(trained) == 2 and meta["test_top1"] == 12.5
    assert "checkpoint is corrupt" in capsys.readouterr().out
    assert path.with_name(path.name + ".corrupt").exists()  # kept for inspection
    load_checkpoint(path, tiny_model(1))  # the new cache entry is sound
