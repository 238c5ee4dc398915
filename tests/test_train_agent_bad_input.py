"""train_agent.py refuses every bad flag and env keyword in one line (exit 2) before a run folder exists.

The env keywords name a float checkpoint that does not exist: a check that came after any
model work would fail on the checkpoint instead, with another message.
"""

from __future__ import annotations

import pytest
import torch

import train_agent

MISSING_CHECKPOINT = "/nonexistent/float.pt"


def command(out, *extra: str, env_kwargs: tuple[str, ...] = ()) -> list[str]:
    return [
        "--episodes",
        "2",
        "--output",
        str(out),
        "--no-progress",
        "--env-kwargs",
        "width_mult=0.35",
        f"checkpoint={MISSING_CHECKPOINT}",
        *env_kwargs,
        *extra,
    ]


@pytest.mark.parametrize(
    "extra,env_kwargs,expected",
    [
        ((), ("latency_budget=abc",), "latency_budget must be a finite number in (0, 1] or None, got 'abc' (a string)"),
        ((), ("latency_budget=1.5",), "latency_budget must be a finite number in (0, 1] or None, got 1.5"),
        ((), ("flash_budget=.inf",), "flash_budget must be a finite number in (0, 1] or None, got inf"),
        ((), ("min_bit=four",), "min_bit must be an integer in [1, 8], got 'four' (a string)"),
        ((), ("min_bit=2.5",), "min_bit must be an integer in [1, 8], got 2.5"),
        ((), ("min_bit=6", "max_bit=4"), "min_bit must not exceed max_bit"),
        ((), ("width_mult=0",), "width_mult must be a finite number in (0, 4], got 0"),
        ((), ("latency_budgt=0.5",), "does not take keyword(s) latency_budgt"),
        (
            ("--hyperparams", "warmup=abc"),
            (),
            "haq-ddpg hyperparameter warmup must be an integer, got 'abc' (a string)",
        ),
        (("--hyperparams", "warmup=-1"), (), "warmup and n_update must be >= 0"),
        (("--algo", "ppo", "--hyperparams", "n_steps=many"), (), "ppo hyperparameter n_steps must be an integer"),
        (("--seed", "-1"), (), "--seed must be an integer in [0, 4294967295], got -1"),
        (("--seed", "4294967296"), (), "--seed must be an integer in [0, 4294967295]"),
        (("--episodes", "0"), (), "--episodes must be an integer >= 1, got 0"),
        (("--optimize", "--seed", "-1"), (), "--seed must be an integer in [0, 4294967295], got -1"),
    ],
)
def test_bad_flag_or_env_keyword_is_one_line_and_leaves_no_folder(
    extra, env_kwargs, expected, tmp_path, capsys
) -> None:
    out = tmp_path / "run"
    assert train_agent.main(command(out, *extra, env_kwargs=env_kwargs)) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1, err
    assert not out.exists()


def test_cuda_device_on_a_cpu_only_torch(tmp_path, capsys) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    out = tmp_path / "run"
    assert train_agent.main(command(out, "--device", "cuda")) == 2
    err = capsys.readouterr().err
    assert "--device: device 'cuda': this torch build sees no CUDA device" in err and err.count("\n") == 1
    assert not out.exists()


def test_invalid_yaml_in_config_is_one_line(tmp_path, capsys) -> None:
    config = tmp_path / "config.yml"
    config.write_text("algo: haq-ddpg\nenv_kwargs: {latency_budget: 0.5\n")
    assert train_agent.main(["--config", str(config), "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert f"--config '{config}' is not valid YAML" in err and "line" in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()


def test_bad_value_in_a_config_file_is_refused_like_the_flag(tmp_path, capsys) -> None:
    config = tmp_path / "config.yml"
    config.write_text(
        "algo: haq-ddpg\nenv: HAQ-MobileNetV2-v0\nseed: abc\nn_episodes: 2\nenv_kwargs: {}\nhyperparams: {}\n"
    )
    assert train_agent.main(["--config", str(config), "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "--seed must be an integer in [0, 4294967295], got 'abc' (a string)" in err and err.count("\n") == 1


def test_unwritable_output_is_one_line(tmp_path, capsys) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder\n")
    out = blocker / "run"  # under a regular file: refused even for root, unlike a chmod'ed folder
    assert train_agent.main(command(out, env_kwargs=("latency_budget=0.5",))) == 2
    err = capsys.readouterr().err
    assert f"cannot create run folder '{out}'" in err and err.count("\n") == 1, err
    assert blocker.read_text() == "not a folder\n"
