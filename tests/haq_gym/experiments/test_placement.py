"""Worker placement: devices checked and expanded, workers spread over them, threads dividing the cores."""

from __future__ import annotations

import pytest

from haq_gym.experiments.placement import THREADS_ENV, plan_slots, resolve_devices


def test_auto_is_every_gpu_or_the_cpu() -> None:
    assert resolve_devices(["auto"], gpu_count=0) == ["cpu"]
    assert resolve_devices(["auto"], gpu_count=3) == ["cuda:0", "cuda:1", "cuda:2"]
    assert resolve_devices(["cuda", "cuda:1", "cuda:0"], gpu_count=2) == ["cuda:0", "cuda:1"]


@pytest.mark.parametrize(
    "names, gpus, message",
    [
        (["gpu0"], 1, "unknown device 'gpu0'"),
        (["cuda:2"], 2, "'cuda:2' is not on this machine, which has 2 CUDA device"),
        (["cuda"], 0, "no CUDA device"),
        ([], 0, "at least one device"),
    ],
)
def test_unknown_or_missing_devices_are_refused(names: list[str], gpus: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_devices(names, gpu_count=gpus)


def test_workers_take_devices_in_turn_and_share_the_cores() -> None:
    slots = plan_slots(16, ["auto"], cores=16, gpu_count=4)
    assert [s.device for s in slots[:5]] == ["cuda:0", "cuda:1", "cuda:2", "cuda:3", "cuda:0"]
    assert {s.threads for s in slots} == {1}
    assert sum(s.device == "cuda:2" for s in slots) == 4
    slots = plan_slots(None, ["cuda:0", "cuda:1"], workers_per_device=3, cores=16, gpu_count=2)
    assert len(slots) == 6 and {s.threads for s in slots} == {2}
    assert plan_slots(3, ["cpu"], cores=8, gpu_count=0)[0].threads == 2  # 8 // 3
    assert slots[0].environment({"PATH": "/bin"}) == {"PATH": "/bin", THREADS_ENV: "2"}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"workers": 3, "cores": 2}, "3 workers need at least one CPU core each.* use 2"),
        (
            {"workers": 5, "devices": ["cuda:0", "cuda:1"], "workers_per_device": 2, "cores": 64, "gpu_count": 2},
            "5 workers do not fit on 2 device",
        ),
        ({"workers": 0, "cores": 2}, "at least 1"),
        ({"workers": 1, "workers_per_device": 0, "cores": 2}, "--workers-per-device"),
    ],
)
def test_more_workers_than_the_machine_holds_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan_slots(**{"devices": ["cpu"], "gpu_count": 0, **kwargs})
