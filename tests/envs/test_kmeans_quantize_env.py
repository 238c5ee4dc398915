"""HAQ-KMeans-*: the k-means model-size MDP, its budget, finetuning, export, and the agents' interface."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.blackbox import EvaluationBudget, feasible_uniform_bits
from envs.kmeans_quantize_env import OBSERVATION_FEATURES, KMeansQuantizeEnv
from haq_gym.export.kmeans_file import read_kmeans_file
from haq_gym.models import build_model, save_checkpoint
from haq_gym.policy import PolicyFile
from haq_gym.runs import RunRecorder
from haq_gym.search_setup import build_search_setup


@pytest.fixture(scope="module")
def setup(tiny_env_kwargs):
    return build_search_setup(**{**tiny_env_kwargs, "calibration_size": 1})


def episode(env: KMeansQuantizeEnv, bits: list[int]) -> dict:
    env.reset(seed=0)
    info: dict = {}
    for b in bits:
        _, _, done, _, info = env.step(env.bits_to_action(b))
    assert done
    return info


def test_spaces_observation_and_episode(setup) -> None:
    env = KMeansQuantizeEnv(setup=setup)
    assert len(env.decisions) == 53 and all(j == 0 for _, j in env.decisions)
    assert env.observation_space.shape == (len(OBSERVATION_FEATURES),) == (11,)
    obs, _ = env.reset(seed=0)
    idx = {name: i for i, name in enumerate(OBSERVATION_FEATURES)}
    assert obs[idx["previous_bits"]] == 1.0 and obs[idx["size_spent"]] == pytest.approx(1 / 32)
    assert obs[idx["size_slack"]] == pytest.approx(0.1 - 1 / 32)
    obs, *_ = env.step(env.bits_to_action(4))
    assert obs[idx["previous_bits"]] == pytest.approx(4 / 8) and obs[idx["size_spent"]] > 1 / 32
    info = episode(env, [2] * 53)
    assert info["policy"] == [[2, -1]] * 53 == info["agent_policy"]
    assert info["flash_ratio"] == pytest.approx(2 / 32) and info["budget_met"]
    assert info["size_bytes"] == sum(layer.weight.numel() for layer in setup.layers) * 2 / 8
    assert info["reward"] == pytest.approx(0.1 * (info["accuracy"] - info["reference_accuracy"]))
    assert np.isfinite(info["latency_ratio"]) and 0 < info["bitops_ratio"] < 1


@pytest.mark.parametrize("enforcement", ["greedy", "haq"])
def test_budget_enforcement(setup, enforcement: str) -> None:
    env = KMeansQuantizeEnv(setup=setup, size_budget=0.1, enforcement=enforcement)
    info = episode(env, [8] * 53)
    assert info["budget_met"] and info["flash_ratio"] <= 0.1 + 1e-9 and info["agent_policy"] == [[8, -1]] * 53
    bits = [w for w, _ in info["policy"]]
    assert min(bits) >= 1 and sum(bits) < 8 * 53
    if enforcement == "haq":  # one bit off each layer from the last, round after round: nearly uniform
        assert max(bits) - min(bits) <= 1 and bits[-1] <= bits[0]


def test_model_file_has_the_reported_size_and_the_evaluated_weights(setup, tmp_path) -> None:
    env = KMeansQuantizeEnv(setup=setup)
    bits = [1 + i % 8 for i in range(53)]
    info = episode(KMeansQuantizeEnv(setup=setup, size_budget=0.2), bits)
    size = env.write_model_file(tmp_path / "m.haqkm", info["policy"])
    assert size == info["file_bytes"] == (tmp_path / "m.haqkm").stat().st_size
    assert info["size_bytes"] < size < info["size_bytes"] + 53 * (4 * 256 + 80)
    records = read_kmeans_file(tmp_path / "m.haqkm")
    setup.model.eval()
    for layer, record in zip(setup.layers, records, strict=True):
        assert record.bits == layer.w_bit
        assert torch.equal(torch.from_numpy(record.weight()), layer.weight_quantizer(layer.weight))


def test_finetune_with_reprojection_restores_float_weights(tmp_path) -> None:
    torch.manual_seed(0)
    ckpt = tmp_path / "r20.pt"
    save_checkpoint(ckpt, build_model("resnet20", 10, width_mult=0.25), {})
    env = KMeansQuantizeEnv(
        model="resnet20", width_mult=0.25, checkpoint=str(ckpt), val_size=16, finetune_steps=2, progress=False
    )
    before = {k: v.clone() for k, v in env.setup.model.state_dict().items()}
    info = episode(env, [3] * 20)
    assert info["budget_met"] and 0 <= info["accuracy"] <= 100
    after = env.setup.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_agents_interface_recorder_and_masks(setup, tmp_path) -> None:
    env = KMeansQuantizeEnv(setup=setup, action_mode="discrete", size_budget=0.1)
    assert feasible_uniform_bits(env.problem) == [3, 2, 1]  # 3 bits = 0.094 of 32-bit, 4 bits = 0.125
    recorder = RunRecorder(env.problem, tmp_path, found_by={"algo": "test"}, tensorboard=False)
    with EvaluationBudget(env.problem, 1, "test", progress=False) as evaluate:
        outcome = evaluate([3] * 53)
    recorder.close()
    assert outcome.policy == [[3, -1]] * 53 and outcome.extras["file_bytes"] == env.file_size(outcome.policy)
    best = PolicyFile.load(tmp_path / "best_policy.json")
    assert best.bits == [[3, -1]] * 53 and best.found_by["quantizer"] == "kmeans" and best.budget["size"] == 0.1
    assert (tmp_path / "episodes.csv").read_text().count("\n") == 2
    env.reset(seed=0)
    done, masks = False, []
    while not done:
        mask = env.action_masks()
        masks.append(mask.all())
        _, _, done, _, info = env.step(int(np.flatnonzero(mask)[-1]))
    assert not all(masks) and info["budget_met"] and info["policy"] == info["agent_policy"]


def test_bad_input_is_rejected_clearly(setup) -> None:
    with pytest.raises(ValueError, match=r"impossible.*0\.0312"):
        KMeansQuantizeEnv(setup=setup, size_budget=0.02)
    with pytest.raises(ValueError, match="min_bit"):
        KMeansQuantizeEnv(setup=setup, min_bit=0)
    with pytest.raises(ValueError, match="greedy, haq"):
        KMeansQuantizeEnv(setup=setup, enforcement="nope")
    with pytest.raises(ValueError, match="continuous, discrete"):
        KMeansQuantizeEnv(setup=setup, action_mode="binary")
