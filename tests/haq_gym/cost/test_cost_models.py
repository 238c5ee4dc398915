"""Layer measurement, latency tables, the analytic accelerator, flash, budgets and their enforcement."""

from __future__ import annotations

import numpy as np
import pytest

from haq_gym.cost import (
    BitSerialAccelerator,
    Budget,
    CostModel,
    LayerInfo,
    enforce_budget,
    load_table,
    measure_layers,
    save_table,
)
from haq_gym.models import build_model
from haq_gym.quant import wrap_model


@pytest.fixture(scope="module")
def infos() -> list[LayerInfo]:
    model = build_model("mobilenetv2", num_classes=10, width_mult=1.0)
    return measure_layers(model, wrap_model(model), 32)


def test_mobilenetv2_layers_are_measured(infos: list[LayerInfo]) -> None:
    assert len(infos) == 53
    stem = infos[0]
    assert (stem.kind, stem.in_channels, stem.out_channels, stem.stride, stem.in_h, stem.out_h) == (
        "conv",
        3,
        32,
        1,
        32,
        32,
    )
    assert sum(i.kind == "depthwise" for i in infos) == 17
    assert infos[-1].kind == "linear" and infos[-1].weight_count == 1280 * 10
    assert infos[-2].in_h == 4  # CIFAR strides: 32 -> 32 -> 16 -> 8 -> 4
    assert stem.macs == 3 * 32 * 9 * 32 * 32


def test_accelerator_is_compute_bound_for_big_pointwise_and_memory_bound_for_depthwise(infos) -> None:
    acc = BitSerialAccelerator(batch=16, bit_macs_per_cycle=4096, memory_bits_per_cycle=16)
    table = acc.table(infos)
    assert table.shape == (53, 8, 8)
    assert np.all(np.diff(table, axis=1) >= 0) and np.all(np.diff(table, axis=2) >= 0)
    dw = next(i for i, info in enumerate(infos) if info.kind == "depthwise")
    # memory bound: latency grows linearly with a_bit and barely with w_bit
    assert table[dw, 7, 3] / table[dw, 0, 3] < 1.01
    assert table[dw, 3, 7] / table[dw, 3, 3] == pytest.approx(2.0, rel=0.02)
    pw = max(range(53), key=lambda i: infos[i].macs if infos[i].kind == "conv" else 0)
    assert table[pw, 7, 7] / table[pw, 3, 3] == pytest.approx(4.0, rel=1e-6)  # compute bound: w*a


def test_accelerator_rejects_bad_parameters_and_unknown_yaml_keys(tmp_path) -> None:
    with pytest.raises(ValueError, match="batch"):
        BitSerialAccelerator(batch=0)
    cfg = tmp_path / "hw.yml"
    cfg.write_text("batch: 1\nclock_mhz: 100\n")
    with pytest.raises(ValueError, match="clock_mhz"):
        BitSerialAccelerator.from_yaml(cfg)
    cfg.write_text("batch: 1\n")
    assert BitSerialAccelerator.from_yaml(cfg).batch == 1


def test_table_file_round_trip_and_shape_errors(tmp_path, infos) -> None:
    table = BitSerialAccelerator().table(infos)
    path = tmp_path / "t.npy"
    save_table(table, path)
    assert np.array_equal(load_table(path, 53), table)
    with pytest.raises(ValueError, match=r"\(53, 8, 8\)"):
        load_table(path, 52)
    np.save(tmp_path / "bad.npy", np.ones((53, 8)))
    with pytest.raises(ValueError, match=r"shape \(53, 8\)"):
        load_table(tmp_path / "bad.npy", 53)
    with pytest.raises(FileNotFoundError, match=r"missing\.npy"):
        load_table(tmp_path / "missing.npy", 53)


def test_cost_ratios(infos) -> None:
    cm = CostModel(infos, BitSerialAccelerator().table(infos), float_bit=8)
    costs = cm.costs([[8, 8]] * 53)
    assert costs.latency_ratio == pytest.approx(1.0) and costs.flash_ratio == pytest.approx(1.0)
    policy = [[8, -1]] + [[4, 4]] * 51 + [[8, 8]]
    total = sum(i.weight_count for i in infos)
    pinned = infos[0].weight_count + infos[-1].weight_count
    expected_flash = (8 * pinned + 4 * (total - pinned)) / (8 * total)
    assert cm.costs(policy).flash_ratio == pytest.approx(expected_flash)
    assert cm.costs(policy).bitops_ratio < 0.3
    with pytest.raises(ValueError, match="53 quantizable layers"):
        cm.costs(policy[:-1])


def test_impossible_budget_reports_minimum(infos) -> None:
    cm = CostModel(infos, BitSerialAccelerator().table(infos))
    cheapest = [[8, -1]] + [[2, 2]] * 51 + [[8, 8]]
    minimum = cm.costs(cheapest).latency_ratio
    with pytest.raises(ValueError, match=f"{minimum:.4f}"):
        Budget(latency=minimum * 0.9).check_feasible(cm, cheapest)
    Budget(latency=minimum * 1.01).check_feasible(cm, cheapest)
    with pytest.raises(ValueError, match=r"flash budget must be a finite number in \(0, 1\]"):
        Budget(flash=0.0)


@pytest.mark.parametrize("name", ["greedy", "haq"])
@pytest.mark.parametrize("budget", [Budget(latency=0.4), Budget(flash=0.45), Budget(latency=0.356, flash=0.431)])
def test_enforcement_meets_budget_and_keeps_pinned_layers(infos, name: str, budget: Budget) -> None:
    cm = CostModel(infos, BitSerialAccelerator().table(infos))
    free = [(False, False)] + [(True, True)] * 51 + [(False, False)]
    start = [[8, -1]] + [[8, 8]] * 51 + [[8, 8]]
    out = enforce_budget(name, start, free, cm, budget, min_bit=2)
    assert budget.satisfied(cm.costs(out))
    assert out[0] == [8, -1] and out[-1] == [8, 8]
    assert all(2 <= b <= 8 for pair in out[1:-1] for b in pair)
    assert start[1] == [8, 8]  # the input is not modified


def test_greedy_leaves_feasible_policies_alone_and_changes_no_more_bits_than_haq(infos) -> None:
    cm = CostModel(infos, BitSerialAccelerator().table(infos))
    free = [(False, False)] + [(True, True)] * 51 + [(False, False)]
    cheap = [[8, -1]] + [[3, 3]] * 51 + [[8, 8]]
    assert enforce_budget("greedy", cheap, free, cm, Budget(latency=0.9), 2) == cheap
    rng = np.random.default_rng(0)
    start = [[8, -1]] + [list(map(int, rng.integers(2, 9, 2))) for _ in range(51)] + [[8, 8]]
    budget = Budget(latency=0.35)
    greedy = enforce_budget("greedy", start, free, cm, budget, 2)
    haq = enforce_budget("haq", start, free, cm, budget, 2)
    removed = lambda p: sum(a - b for s, q in zip(start, p, strict=True) for a, b in zip(s, q, strict=True))  # noqa: E731
    assert removed(greedy) <= removed(haq)


def test_unknown_enforcement(infos) -> None:
    cm = CostModel(infos, BitSerialAccelerator().table(infos))
    with pytest.raises(ValueError, match="greedy, haq"):
        enforce_budget("magic", [[8, 8]] * 53, [(True, True)] * 53, cm, Budget(latency=0.5), 2)
