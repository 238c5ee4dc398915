"""The Python API: finetune and export a policy without the command lines, with typed results."""

from __future__ import annotations

from pathlib import Path

import pytest

import haq_gym
from haq_gym.export.packed_file import read_packed_file
from haq_gym.finetune import load_qat_checkpoint


def test_finetune_through_the_api(tiny_checkpoint: str, tmp_path: Path) -> None:
    strategy = [[8, -1]] + [[4, 4]] * 51 + [[8, 8]]
    tuned = haq_gym.finetune_policy(
        strategy,
        width_mult=0.35,
        epochs=1,
        init_checkpoint=tiny_checkpoint,
        output=tmp_path / "ft",
        seed=0,
        progress=False,
    )
    assert isinstance(tuned, haq_gym.FinetuneResult) and tuned.run_dir == tmp_path / "ft"
    assert tuned.best_epoch == 1 and 0.0 <= tuned.best_test_top1 <= 100.0
    assert [[m.w_bit, m.a_bit] for _, m in load_qat_checkpoint(tuned.best_checkpoint).layers] == strategy


def test_export_a_haq_strategy_through_the_api(tiny_checkpoint: str, tmp_path: Path) -> None:
    strategy = [[8, -1]] + [[3 + i % 4, 8 - i % 5] for i in range(51)] + [[8, 8]]
    packed = haq_gym.export_policy(
        strategy, model="mobilenetv2", width_mult=0.35, float_checkpoint=tiny_checkpoint, out=tmp_path / "m.hqpk"
    )
    assert isinstance(packed, haq_gym.ExportResult) and packed.layers == 53
    assert (
        packed.file_bytes == (tmp_path / "m.hqpk").stat().st_size == read_packed_file(tmp_path / "m.hqpk").sizes.total
    )
    assert packed.integer_top1 is not None and packed.fake_quant_top1 is not None
    assert abs(packed.integer_top1 - packed.fake_quant_top1) <= 1.2


def test_api_input_errors_are_clear(tiny_checkpoint: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="either a policy or uniform="):
        haq_gym.finetune_policy()
    with pytest.raises(ValueError, match="exactly one of a policy, checkpoint= or uniform="):
        haq_gym.export_policy([[8, -1], [8, 8]], uniform=(4, 4), out=tmp_path / "x.hqpk")
    with pytest.raises(ValueError, match="lists 2 \\[w_bit, a_bit\\] pairs but the model has 53"):
        haq_gym.finetune_policy(
            [[8, -1], [8, 8]],
            width_mult=0.35,
            epochs=1,
            output=tmp_path / "ft",
            init_checkpoint=tiny_checkpoint,
            progress=False,
        )
    assert not (tmp_path / "ft").exists()


def test_search_through_the_api(tiny_env_kwargs: dict, tmp_path: Path) -> None:
    found = haq_gym.search(
        algo="random",
        episodes=3,
        seed=0,
        env_kwargs={**tiny_env_kwargs, "latency_budget": None},
        output=tmp_path / "run",
        progress=False,
    )
    assert found.run_dir == tmp_path / "run" and found.episodes == 3
    assert found.best_policy == tmp_path / "run" / "best_policy.json" and found.best_policy.exists()
    assert found.best_reward is not None
    with pytest.raises(ValueError, match="episodes must be at least 1"):
        haq_gym.search(algo="random", episodes=0, env_kwargs=tiny_env_kwargs, output=tmp_path / "none")
