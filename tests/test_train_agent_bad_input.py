"""train_agent.py: every class of bad input is one line on stderr, a non-zero exit, and no run folder left behind."""

from __future__ import annotations

import pytest
import torch

import train_agent


def base_cmd(tiny_env_kwargs: dict, out) -> list[str]:
    return (["--episodes", "2", "--seed", "0", "--output", str(out), "--no-progress", "--env-kwargs"]
            + [f"{k}={v}" for k, v in tiny_env_kwargs.items()])


BAD = [
    ("latency_budget=abc", ["latency_budget=abc"], [], "latency_budget must be a finite number in (0, 1]"),
    ("latency_budget above 1", ["latency_budget=1.5"], [], "latency_budget must be a finite number in (0, 1]"),
    ("latency_budget inf", ["latency_budget=.inf"], [], "latency_budget must be a finite number in (0, 1]"),
    ("min_bit=four", ["min_bit=four"], [], "min_bit must be an integer in [1, 8], got 'four'"),
    ("min_bit=2.5", ["min_bit=2.5"], [], "min_bit must be an integer in [1, 8], got 2.5"),
    ("unknown env keyword", ["latency_budgt=0.5"], [], "does not take keyword(s) latency_budgt"),
    ("width_mult=0", ["width_mult=0"], [], "width_mult must be a finite number in (0, 4], got 0"),
    ("unparsable value", ["hardware=[1"], [], "the value is not a YAML scalar"),
    ("warmup=abc", [], ["--hyperparams", "warmup=abc"], "haq-ddpg hyperparameter warmup must be an integer"),
    ("warmup=-1", [], ["--hyperparams", "warmup=-1"], "warmup and n_update must be >= 0"),
    ("seed -1", [], ["--seed", "-1"], "--seed must be an integer in [0, 4294967295], got -1"),
    ("episodes 0", [], ["--episodes", "0"], "--episodes must be an integer >= 1, got 0"),
]


@pytest.mark.parametrize("name,env_kw,extra,expected", BAD, ids=[b[0] for b in BAD])
def test_bad_flag_is_refused_before_a_run_folder_exists(tiny_env_kwargs, tmp_path, capsys, name, env_kw, extra,
                                                        expected) -> None:
    out = tmp_path / "run"
    assert train_agent.main(base_cmd(tiny_env_kwargs, out) + env_kw + extra) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_cuda_on_a_cpu_only_torch(tiny_env_kwargs, tmp_path, capsys) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    assert train_agent.main(base_cmd(tiny_env_kwargs, tmp_path / "run") + ["--device", "cuda"]) == 2
    assert "sees no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("text,expected", [("algo: [unclosed", "is not valid YAML"),
                                           ("algo: haq-ddpg\nenv_kwargs: [1, 2]\n", "env_kwargs must be a mapping"),
                                           ("- just\n- a list\n", "is neither a haq-gym run config")])
def test_bad_config_file(tmp_path, capsys, text, expected) -> None:
    config = tmp_path / "config.yml"
    config.write_text(text)
    assert train_agent.main(["--config", str(config), "--episodes", "1", "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_unwritable_output_is_one_line(tiny_env_kwargs, tmp_path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert train_agent.main(base_cmd(tiny_env_kwargs, blocker / "run")) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot create run folder") and err.count("\n") == 1


def test_an_agent_refusing_its_settings_leaves_no_half_written_folder(tiny_env_kwargs, tmp_path, capsys) -> None:
    """Checks inside an agent (here greedy-sensitivity's probe_bits range, which depends on the env) run after the
    folder is claimed; the folder, holding nothing of value yet, is removed again."""
    out = tmp_path / "run"
    cmd = base_cmd(tiny_env_kwargs, out) + ["--algo", "greedy-sensitivity", "--hyperparams", "probe_bits=9"]
    assert train_agent.main(cmd) == 2
    assert "probe_bits must be in 2..7" in capsys.readouterr().err
    assert not out.exists()
    assert train_agent.main(cmd[:-2]) == 0  # the same --output is free for the corrected command
