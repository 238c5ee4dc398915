"""Typed checks of flags and env keywords: every bad-input class gets one line saying what was expected."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from agents.registry import check_hyperparam_values
from haq_gym.cost import Budget
from haq_gym.cost.latency_table import validate_table
from haq_gym.policy import PolicyFile
from haq_gym.validation import check_env_kwargs, check_policy_fits, check_seed


@pytest.mark.parametrize(
    "key,value,expected",
    [
        ("latency_budget", "abc", "latency_budget must be a finite number in (0, 1] or None, got 'abc' (a string)"),
        ("latency_budget", 1.5, "latency_budget must be a finite number in (0, 1]"),
        ("latency_budget", math.inf, "latency_budget must be a finite number in (0, 1]"),
        ("latency_budget", 0, "latency_budget must be a finite number in (0, 1]"),
        ("flash_budget", True, "flash_budget must be a finite number"),
        ("min_bit", "four", "min_bit must be an integer in [1, 8], got 'four' (a string)"),
        ("min_bit", 2.5, "min_bit must be an integer in [1, 8], got 2.5"),
        ("max_bit", 9, "max_bit must be an integer in [1, 8], got 9"),
        ("width_mult", 0, "width_mult must be a finite number in (0, 4], got 0"),
        ("width_mult", "wide", "width_mult must be a finite number"),
        ("calibration_size", 0, "calibration_size must be an integer >= 1, got 0"),
        ("val_size", 10.5, "val_size must be an integer >= 1 or None, got 10.5"),
        ("finetune_steps", -1, "finetune_steps must be an integer >= 0"),
        ("finetune_lr", 0.0, "finetune_lr must be a finite number > 0"),
        ("pin_first_last", "yes", "pin_first_last must be True, False or 'wall'"),
        ("finetune_epochs", -1, "finetune_epochs must be an integer >= 0"),
        ("use_top5", "maybe", "use_top5 must be true or false"),
        ("download", 1, "download must be true or false"),
        ("eval_batch_size", None, "eval_batch_size must be an integer >= 1, got None"),
        ("checkpoint", 3, "checkpoint must be a non-empty string or None"),
        ("latency_table", 0.5, "latency_table must be a path (a string) or None"),
        ("device", "tpu", "device must be cpu, cuda, cuda:N or auto"),
    ],
)
def test_env_keyword_of_wrong_type_or_range_is_refused_by_the_env_itself(key, value, expected) -> None:
    with pytest.raises(ValueError, match=re.escape(expected)) as err:
        check_env_kwargs("HAQ-MobileNetV2-v0", {key: value})
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_min_above_max_and_unknown_keywords() -> None:
    with pytest.raises(ValueError, match="min_bit must not exceed max_bit"):
        check_env_kwargs("HAQ-MobileNetV2-v0", {"min_bit": 6, "max_bit": 4})
    with pytest.raises(ValueError, match=r"does not take keyword\(s\) latency_budgt; it takes .*latency_budget"):
        check_env_kwargs("HAQ-MobileNetV2-v0", {"latency_budgt": 0.5})


def test_cuda_device_on_a_cpu_only_torch_is_refused() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    with pytest.raises(ValueError, match="sees no CUDA device"):
        check_env_kwargs("HAQ-MobileNetV2-v0", {"device": "cuda"})


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, "abc", True])
def test_seeds_outside_what_every_rng_takes(seed) -> None:
    with pytest.raises(ValueError, match=r"--seed must be an integer in \[0, 4294967295\]"):
        check_seed(seed)


@pytest.mark.parametrize(
    "algo,hyper,expected",
    [
        ("haq-ddpg", {"warmup": "abc"}, "haq-ddpg hyperparameter warmup must be an integer, got 'abc'"),
        ("haq-ddpg", {"lr_actor": "fast"}, "haq-ddpg hyperparameter lr_actor must be a finite number"),
        ("haq-ddpg", {"warmup": -1}, "warmup and n_update must be >= 0"),
        ("haq-ddpg", {"batch_size": 2.5}, "haq-ddpg hyperparameter batch_size must be an integer, got 2.5"),
        ("ppo", {"n_steps": "many"}, "ppo hyperparameter n_steps must be an integer"),
        ("sac", {"gamma": "high"}, "sac hyperparameter gamma must be a finite number"),
    ],
)
def test_hyperparameters_of_the_wrong_type_are_refused_before_the_agent_runs(algo, hyper, expected) -> None:
    with pytest.raises(ValueError, match=re.escape(expected)) as err:
        check_hyperparam_values(algo, hyper)
    assert expected in str(err.value)


def test_structured_and_union_sb3_hyperparameters_are_left_to_sb3() -> None:
    check_hyperparam_values(
        "sac", {"train_freq": [1, "episode"], "policy_kwargs": {"net_arch": [8]}, "gamma": 1, "ent_coef": 0.1}
    )  # ent_coef's default is "auto"; a float is fine too


@pytest.mark.parametrize("latency", [1.01, math.inf, math.nan, "0.5"])
def test_budgets_above_one_or_not_finite(latency) -> None:
    with pytest.raises(ValueError, match=r"latency budget must be a finite number in \(0, 1\]"):
        Budget(latency=latency)


@pytest.mark.parametrize("dtype", ["<U4", np.complex128, object])
def test_latency_tables_of_non_real_dtype(dtype) -> None:
    table = np.ones((3, 8, 8)).astype(dtype)
    with pytest.raises(ValueError, match="expected real numbers"):
        validate_table(table, 3)


def _policy(names: list[str], **model_kwargs) -> PolicyFile:
    return PolicyFile("mobilenetv2", "digits", names, [[8, 8]] * len(names), model_kwargs=model_kwargs)


def test_policy_checked_against_its_model_before_anything_is_trained() -> None:
    from haq_gym.models import build_model
    from haq_gym.quant import wrap_model

    names = [n for n, _ in wrap_model(build_model("mobilenetv2", num_classes=10, width_mult=0.35))]
    check_policy_fits(_policy(names), "mobilenetv2", 0.35, 10)
    with pytest.raises(ValueError, match="policy has 53 layers but the model has 20"):
        check_policy_fits(_policy(names), "resnet20", 1.0)
    with pytest.raises(ValueError, match=r"model_kwargs\.num_classes is 100, but dataset 'digits' has 10 classes"):
        check_policy_fits(_policy(names, num_classes=100), "mobilenetv2", 0.35, 10)
    with pytest.raises(ValueError, match=r"width_mult must be a finite number in \(0, 4\]"):
        check_policy_fits(_policy(names), "mobilenetv2", 0.0)


@pytest.mark.parametrize(
    "document,expected",
    [
        ([1, 2], "expected a JSON object, got list"),
        (
            {
                "format": "haq-gym-policy",
                "version": 1,
                "model": "m",
                "dataset": "d",
                "layers": [],
                "model_kwargs": None,
            },
            "model_kwargs must be a JSON object, got None",
        ),
        (
            {"format": "haq-gym-policy", "version": 1, "model": None, "dataset": "d", "layers": []},
            "model must be a string",
        ),
        (
            {
                "format": "haq-gym-policy",
                "version": 1,
                "model": "m",
                "dataset": "d",
                "layers": [{"name": "a", "w_bit": True, "a_bit": 8}],
            },
            "expected [w_bit, a_bit] with integers",
        ),
    ],
)
def test_malformed_policy_documents(document, expected) -> None:
    with pytest.raises(ValueError, match=re.escape(expected)) as err:
        PolicyFile.from_dict(document, source="policy file 'p.json'")
    assert expected in str(err.value)


def test_every_shipped_algorithm_config_passes_the_checks() -> None:
    """The checks must refuse bad input only: every entry of configs/<algo>.yml is accepted."""
    from pathlib import Path

    import yaml

    from agents.registry import algo_names

    configs = Path(__file__).resolve().parents[2] / "configs"
    checked = 0
    for algo in algo_names():
        table = yaml.safe_load((configs / f"{algo}.yml").read_text()) or {}
        for entry in table.values():
            check_hyperparam_values(algo, {k: v for k, v in entry.items() if k != "n_episodes"})
            checked += 1
    assert checked >= len(algo_names())
