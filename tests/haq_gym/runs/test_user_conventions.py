"""The zoo's command-line conventions, the run's closing summary, the latest-run link and TensorBoard's hparams."""

from __future__ import annotations

import os

import gymnasium as gym
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import train_agent
from haq_gym.registration import resolve_env_id
from haq_gym.runs.run_config import UsageError, parse_key_values


def test_key_value_and_key_colon_value_both_parse() -> None:
    parsed = parse_key_values(
        ["latency_budget:0.4", "model=torchvision:resnet50", "model-kwargs:{a: 1}", "x:none"], "--env-kwargs"
    )
    assert parsed == {"latency_budget": 0.4, "model": "torchvision:resnet50", "model_kwargs": {"a": 1}, "x": None}
    assert parse_key_values(["model:torchvision:resnet50"], "--env-kwargs") == {"model": "torchvision:resnet50"}
    with pytest.raises(UsageError, match=r"key=value \(or key:value\)"):
        parse_key_values(["latency_budget"], "--env-kwargs")


def test_env_ids_in_gymnasiums_module_form_with_suggestions_and_foreign_envs_refused() -> None:
    assert resolve_env_id("haq_gym:HAQ-ResNet20-v0") == "HAQ-ResNet20-v0"
    with pytest.raises(ValueError, match="did you mean 'HAQ-ResNet20-v0'"):
        resolve_env_id("HAQ-Resnet20-v0")
    with pytest.raises(ValueError, match="cannot import module 'no_such_module'"):
        resolve_env_id("no_such_module:HAQ-ResNet20-v0")
    assert "CartPole-v1" in gym.registry
    with pytest.raises(ValueError, match="'CartPole-v1' is not a haq-gym env"):
        resolve_env_id("CartPole-v1")


def test_cli_refuses_a_foreign_env_in_one_line(capsys) -> None:
    assert train_agent.main(["--env", "CartPole-v1", "-n", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a haq-gym env" in err[0]


def run_default_folder(tiny_env_kwargs: dict, algo: str = "random") -> list[str]:
    kw = {k: v for k, v in tiny_env_kwargs.items() if k != "progress"}
    return [
        "--algo",
        algo,
        "-n",
        "2",
        "--seed",
        "0",
        "--no-progress",
        "--env",
        "haq_gym:HAQ-MobileNetV2-v0",
        "--env-kwargs",
        *[f"{k}:{v}" for k, v in kw.items()],
        "latency_budget:0.6",
    ]


def test_a_run_ends_with_a_summary_a_latest_link_and_hparams(tiny_env_kwargs, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert train_agent.main(run_default_folder(tiny_env_kwargs)) == 0
    first = tmp_path / "runs" / "random_HAQ-MobileNetV2-v0_seed0"
    out = capsys.readouterr().out
    assert "| best found (episode" in out and "(widest within budget) |" in out and " / 0.6 |" in out
    assert "finetune it: python -m haq_gym.finetune --policy" in out
    assert os.readlink(tmp_path / "runs" / "latest") == first.name
    tb = first / "tensorboard"
    assert not [p for p in tb.iterdir() if p.is_dir()]  # hparams in the run's own folder, not a second run
    tags: dict[str, list[str]] = {"scalars": [], "tensors": []}
    for events in tb.glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for kind in tags:
            tags[kind] += acc.Tags()[kind]
    assert {"result/best_accuracy", "result/best_reward", "result/episodes"} <= set(tags["scalars"])

    assert train_agent.main(run_default_folder(tiny_env_kwargs)) == 0  # the same default folder again
    second = tmp_path / "runs" / "random_HAQ-MobileNetV2-v0_seed0_2"
    assert f"this run writes to {os.path.join('runs', second.name)}" in capsys.readouterr().out
    assert os.readlink(tmp_path / "runs" / "latest") == second.name


def test_final_info_reports_success_as_sb3_reads_it(tiny_env_kwargs) -> None:
    env = gym.make("HAQ-MobileNetV2-v0", **tiny_env_kwargs)
    env.reset(seed=0)
    terminated, info = False, {}
    while not terminated:
        _, _, terminated, _, info = env.step(env.action_space.sample())
    assert info["is_success"] == info["budget_met"]
