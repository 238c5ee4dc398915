"""The per-algorithm configs ship with the installed package and are never silently replaced by library defaults.

The wheel test builds a wheel of this checkout, installs it (no dependencies, nothing
downloaded) into a fresh virtual environment that borrows the test interpreter's installed
packages, and runs ``haq-train --algo sac --episodes 1`` from an unrelated folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

import train_agent
from haq_gym import algo_configs

ROOT = Path(__file__).resolve().parents[1]


def test_checkout_finds_every_algorithms_config() -> None:
    from agents.registry import algo_names

    assert algo_configs.config_dir().resolve() == (ROOT / "configs").resolve()
    for algo in algo_names():
        assert isinstance(algo_configs.algo_defaults(algo, "HAQ-MobileNetV2-v0"), dict), algo
    assert algo_configs.algo_defaults("sac", "HAQ-ResNet20-v0")["episode_reward_relabel"] is True


def test_missing_or_unreadable_config_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "sac.yml").write_text("default: [unclosed\n")
    monkeypatch.setattr(algo_configs, "_PACKAGE_DIR", tmp_path / "pkg")
    with pytest.raises(algo_configs.ConfigError, match=r"cannot read .*sac\.yml"):
        algo_configs.algo_defaults("sac", "HAQ-MobileNetV2-v0")
    with pytest.raises(algo_configs.ConfigError, match=r"no config for algorithm 'td3': .*td3\.yml does not exist"):
        algo_configs.algo_defaults("td3", "HAQ-MobileNetV2-v0")
    assert train_agent.main(["--algo", "td3", "--episodes", "1", "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no config for algorithm 'td3'") and err.count("\n") == 1
    assert not (tmp_path / "run").exists()
    monkeypatch.setattr(algo_configs, "_PACKAGE_DIR", tmp_path / "nowhere" / "pkg")
    with pytest.raises(algo_configs.ConfigError, match="configs folder is missing"):
        algo_configs.config_dir()


def test_wheel_install_resolves_haq_settings_from_any_folder(tmp_path: Path, tiny_checkpoint: str) -> None:
    source = tmp_path / "source"  # a copy, so that the build leaves nothing in the checkout
    for name in ("pyproject.toml", "README.md", "train_agent.py"):
        source.mkdir(exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    for name in ("haq_gym", "envs", "agents", "configs"):
        shutil.copytree(ROOT / name, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(source),
        ],
        check=True,
        cwd=tmp_path,
    )
    (wheel,) = wheels.glob("haq_gym-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # Borrow the dependencies (torch, SB3, ...) as a plain path: its .pth files (this checkout's editable
    # install among them) are not run, so haq_gym can only come from the wheel.
    Path(site, "borrowed_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            "--ignore-installed",
            str(wheel),
        ],
        check=True,
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = tmp_path / "elsewhere"
    where.mkdir()
    found = subprocess.run(
        [str(python), "-c", "from haq_gym.algo_configs import config_dir; print(config_dir())"],
        check=True,
        capture_output=True,
        text=True,
        cwd=where,
        env=env,
    ).stdout.strip()
    assert Path(found).is_relative_to(venv) and Path(found, "sac.yml").is_file()

    result = subprocess.run(
        [
            str(venv / "bin" / "haq-train"),
            "--algo",
            "sac",
            "--episodes",
            "1",
            "--no-progress",
            "--output",
            str(where / "run"),
            "--env-kwargs",
            "width_mult=0.35",
            f"checkpoint={tiny_checkpoint}",
            "val_size=32",
            "calibration_size=8",
        ],
        capture_output=True,
        text=True,
        cwd=where,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    config = yaml.safe_load((where / "run" / "config.yml").read_text())
    assert config["n_episodes"] == 1
    hyper = config["hyperparams"]
    assert (
        hyper["episode_reward_relabel"] is True
        and hyper["learning_starts"] == {"episodes": 20}
        and hyper["gamma"] == 0.0
    )
