"""The policy evaluator: caching, the per-episode finetune, restoring float weights."""

from __future__ import annotations

import pytest

from haq_gym.search_setup import build_search_setup

POLICY = [[8, -1]] + [[4, 4]] * 51 + [[8, 8]]


@pytest.fixture(scope="module")
def finetune_setup(tiny_env_kwargs):
    return build_search_setup(**{**tiny_env_kwargs, "finetune_steps": 3, "finetune_lr": 0.05})


def test_finetune_is_deterministic_and_restores_float_weights(finetune_setup) -> None:
    ev = finetune_setup.evaluator
    before = {k: v.clone() for k, v in finetune_setup.model.state_dict().items()}
    first = ev.evaluate(POLICY)
    after = finetune_setup.model.state_dict()
    assert all(before[k].equal(after[k]) for k in before), "float weights must be restored after a finetune"
    ev._cache.clear()
    again = ev.evaluate(POLICY)
    assert again.accuracy == first.accuracy and not again.cached
    assert ev.evaluate(POLICY).cached
    assert ev.float_accuracy() == pytest.approx(finetune_setup.reference_accuracy)


def test_finetune_moves_the_weights_it_evaluates(finetune_setup) -> None:
    """During the evaluation the model runs with finetuned weights (checked through a forward hook)."""
    import torch

    setup = finetune_setup
    setup.evaluator._cache.clear()
    seen: list[torch.Tensor] = []
    conv = setup.layers[1]
    handle = conv.register_forward_hook(lambda m, i, o: seen.append(m.weight.detach().clone()))
    try:
        setup.evaluator.evaluate([[8, -1]] + [[5, 5]] * 51 + [[8, 8]])
    finally:
        handle.remove()
    assert seen and not torch.equal(seen[-1], setup.evaluator._float_state[setup.layer_names[1] + ".weight"])


def test_hardware_yaml_changes_the_latency_table(tiny_env_kwargs, tmp_path) -> None:
    cfg = tmp_path / "hw.yml"
    cfg.write_text("batch: 1\nbit_macs_per_cycle: 64\nmemory_bits_per_cycle: 4096\n")
    default = build_search_setup(**tiny_env_kwargs).cost_model.table
    custom = build_search_setup(**{**tiny_env_kwargs, "hardware": str(cfg)}).cost_model.table
    assert custom.shape == default.shape and not (custom == default).all()
