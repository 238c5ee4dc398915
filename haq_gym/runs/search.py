"""A search run owned by the library: build the env, drive it with an agent of the zoo, write the run folder.

``train_agent.py`` parses its flags into a config and calls :func:`run_search`; the Python API
(:func:`haq_gym.search`) and the tuning call it too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml


@dataclass(frozen=True)
class RunResult:
    """What a search run left: its folder, how many evaluations it recorded, and its best feasible policy."""

    run_dir: Path
    episodes: int
    best_reward: float | None
    best_episode: int | None

    @property
    def best_policy(self) -> Path | None:
        """``best_policy.json``, or None when no evaluation met the budget."""
        return None if self.best_episode is None else self.run_dir / "best_policy.json"


def run_search(config: dict[str, Any], output: str | None = None, progress: bool = True, *, setup: Any = None,
               wrap_env: Callable[[Any], Any] | None = None, command: str = "") -> RunResult:
    """Run the search a resolved config describes (``algo``, ``env``, ``seed``, ``n_episodes``, ``env_kwargs``,
    ``hyperparams``) and write its run folder.

    ``setup``: a prebuilt :class:`~haq_gym.search_setup.SearchSetup` for ``gym.make`` (runs of one
    tuning share the model and its evaluation cache; it must have been built from these
    ``env_kwargs``). ``wrap_env``: wraps the recorded env before the runner drives it (tuning
    watches episodes through it and stops pruned runs by raising from it). ``command`` is
    written to ``config.yml``.
    """
    import gymnasium as gym
    import torch

    import haq_gym
    from agents.registry import check_action_mode, check_hyperparams, get_runner, get_spec
    from haq_gym.plots import budgeted_axis, plot_latency_table, plot_policy_bits, plot_search_progress
    from haq_gym.policy import PolicyFile
    from haq_gym.runs.recorder import RunRecorder
    from haq_gym.runs.run_folder import prepare_run_folder

    check_hyperparams(config["algo"], config["hyperparams"])
    config["env_kwargs"].setdefault("action_mode", get_spec(config["algo"]).action_modes[0])
    check_action_mode(config["algo"], config["env_kwargs"]["action_mode"])
    if config["env"] not in gym.registry:
        known = ", ".join(sorted(haq_gym.ENV_IDS))
        raise ValueError(f"unknown env {config['env']!r}; haq-gym registers {known}")
    run_dir = prepare_run_folder(output, f"{config['algo']}_{config['env']}_seed{config['seed']}")
    try:
        torch.manual_seed(config["seed"])
        shared = {} if setup is None else {"setup": setup}
        env = gym.make(config["env"], **{**config["env_kwargs"], "progress": progress, **shared})
    except BaseException:
        if not any(run_dir.iterdir()):
            run_dir.rmdir()
        raise
    with open(run_dir / "config.yml", "w") as fh:
        yaml.safe_dump({**config, "haq_gym_version": haq_gym.__version__, "command": command}, fh, sort_keys=False)
    setup = env.unwrapped.setup
    np.save(run_dir / "latency_table.npy", setup.cost_model.table)
    plot_latency_table(setup.cost_model.table, run_dir / "latency_table.png", list(setup.layer_names),
                       title=f"{config['env']} latency table" + (f" ({setup.latency_source})" if setup.latency_source else ""))
    print(f"float model: {setup.checkpoint} (validation top-1 {setup.reference_accuracy:.2f}%)")
    print(f"budget: {env.unwrapped.budget.to_dict()}  decisions per episode: {len(env.unwrapped.decisions)}")
    recorder = RunRecorder(env, run_dir, found_by={"algo": config["algo"], "seed": config["seed"], "env_id": config["env"],
                                                   "env_kwargs": config["env_kwargs"]})
    try:
        get_runner(config["algo"])(recorder if wrap_env is None else wrap_env(recorder),
                                   episodes=config["n_episodes"], seed=config["seed"],
                                   hyperparams=config["hyperparams"], run_dir=run_dir, progress=progress,
                                   writer=recorder.tensorboard_writer)
    finally:
        recorder.close()
    axis = budgeted_axis(env.unwrapped.budget.to_dict(), weight_only=hasattr(env.unwrapped, "size_budget"))
    if recorder.episodes:
        plot_search_progress(run_dir / "episodes.csv", run_dir / "search_progress.png", axis,
                             title=f"{config['algo']} on {config['env']}, seed {config['seed']}",
                             float_accuracy=setup.reference_accuracy)
    if recorder.best_episode is not None:
        best = PolicyFile.load(run_dir / "best_policy.json")
        plot_policy_bits(best, run_dir / "best_policy.png", [info.kind for info in setup.layer_infos],
                         setup.cost_model.layer_shares(best.bits, axis.name))
        print(f"best policy: episode {recorder.best_episode}, reward {recorder.best_reward:.4f}, "
              f"top-1 {best.accuracy['search_val_top1']:.2f}% (float {best.accuracy['float_search_val_top1']:.2f}%), "
              f"latency ratio {best.costs['latency_ratio']:.4f}, flash ratio {best.costs['flash_ratio']:.4f}")
    else:
        print("no episode met the budget; no best policy written")
    print(f"run folder: {run_dir}")
    best_reward = recorder.best_reward if math.isfinite(recorder.best_reward) else None
    return RunResult(run_dir, recorder.episodes, best_reward, recorder.best_episode)
