"""One search run, start to end: build the env and its problem, drive it with an algorithm, write the run folder.

``train_agent.py`` parses its flags into a :class:`~haq_gym.runs.RunConfig` and calls
:func:`run_search`; tuning (:mod:`agents.tuning`) and the benchmarks call it directly.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import gymnasium as gym
import numpy as np
import torch
import yaml

import haq_gym
from agents.registry import get_runner, get_spec, resume_refusal
from agents.spec import PROBLEM
from haq_gym.plots import budgeted_axis, plot_latency_table, plot_policy_bits, plot_search_progress
from haq_gym.policy import PolicyFile
from haq_gym.runs.checkpoint import DEFAULT_CHECKPOINT_EVERY, SearchCheckpoint, SearchInterrupted
from haq_gym.runs.recorder import RunRecorder
from haq_gym.runs.resume import RunHistory, keep_rows, read_run, restore_history
from haq_gym.runs.run_config import RunConfig, UsageError, command_line
from haq_gym.runs.run_folder import lock_folder, point_latest, prepare_run_folder, release_unused
from haq_gym.runs.summary import UniformBaseline, finetune_command, summary_table, uniform_baseline
from haq_gym.search_setup import SearchSetup

if TYPE_CHECKING:
    from envs.policy_decision_env import PolicyDecisionEnv


@dataclass(frozen=True)
class RunResult:
    """What a search run left: its folder, how many evaluations it recorded, and its best feasible policy."""

    run_dir: Path
    episodes: int
    best_reward: float | None
    best_episode: int | None
    baseline: UniformBaseline | None = None

    @property
    def best_policy(self) -> Path | None:
        """``best_policy.json``, or None when no evaluation met the budget."""
        return None if self.best_episode is None else self.run_dir / "best_policy.json"


def run_search(
    config: RunConfig | None,
    output: str | None = None,
    progress: bool = True,
    *,
    setup: SearchSetup | None = None,
    watch: Callable[[RunRecorder], None] | None = None,
    command: str | None = None,
    baseline: bool = True,
    resume: str | os.PathLike[str] | None = None,
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
    clean_ctrl_c: bool = False,
) -> RunResult:
    """Build the env of ``config``, run its algorithm for ``n_episodes`` evaluations, write the run folder.

    ``output``: the run folder (must not exist or be empty; default
    ``runs/<algo>_<env>_seed<seed>``). ``setup``: a prebuilt
    :class:`~haq_gym.search_setup.SearchSetup` for the env (runs of one tuning share the
    model and its evaluation cache; it must have been built from these ``env_kwargs``).
    ``watch(recorder)`` is called once the run's recorder observes the problem and before
    the search starts (tuning adds its pruning observer there; an exception raised from an
    observer stops the search). ``command`` is written to ``config.yml`` (default: this
    process's command line). ``config.env_kwargs`` gains the algorithm's default
    ``action_mode`` when it has none. ``baseline`` evaluates the widest uniform precision
    within the budget once at the end (one more evaluation, not an episode) for the summary.

    Runs that can resume (every algorithm, except the settings
    :func:`~agents.registry.resume_refusal` names) checkpoint their state into
    ``run_dir/checkpoint/`` every ``checkpoint_every`` episodes (0: only on a requested stop).
    ``resume``: a run folder to continue instead (``config`` and ``output`` must be None;
    the folder's ``config.yml`` is used): from its latest checkpoint to its episode budget,
    appending to its files (:mod:`haq_gym.runs.resume`); the folder is locked meanwhile.
    With ``clean_ctrl_c`` (the command line), in the main thread, a first Ctrl-C stops the
    search cleanly at the end of the running episode, after a checkpoint; a second stops it
    at once. Either way, and on any other ``KeyboardInterrupt``
    during the search, :class:`~haq_gym.runs.checkpoint.SearchInterrupted` is raised.
    Resuming a finished run raises :class:`~haq_gym.runs.resume.RunFinished`.
    """
    history = None
    lock = None
    if resume is not None:
        if config is not None or output is not None:
            raise UsageError("--resume continues a run folder with its own config.yml; give no other run settings")
        history = read_run(resume)
        config = history.config
        refusal = resume_refusal(config.algo, config.hyperparams)
        if refusal is not None:
            raise UsageError(refusal)
        lock = lock_folder(history.run_dir)
    if config is None:
        raise UsageError("a search needs a run config, or a run folder to resume")
    try:
        return _run(config, output, progress, setup, watch, command, baseline, history, checkpoint_every, clean_ctrl_c)
    finally:
        if lock is not None:
            lock.close()


@contextmanager
def _clean_ctrl_c(checkpoint: SearchCheckpoint | None) -> Iterator[None]:
    """While searching: the first SIGINT asks ``checkpoint`` to stop at the episode's end, a second interrupts."""
    if checkpoint is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if checkpoint.stop_requested:
            raise KeyboardInterrupt
        checkpoint.request_stop()
        print("\nstopping after this episode (a checkpoint is written); Ctrl-C again to stop now", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _run(
    config: RunConfig,
    output: str | None,
    progress: bool,
    setup: SearchSetup | None,
    watch: Callable[[RunRecorder], None] | None,
    command: str | None,
    baseline: bool,
    history: RunHistory | None,
    checkpoint_every: int,
    clean_ctrl_c: bool,
) -> RunResult:
    """:func:`run_search` once the run (new, or ``history`` resumed and locked) is known."""
    config.validate()
    spec = get_spec(config.algo)
    config.env_kwargs.setdefault("action_mode", spec.action_modes[0])
    if checkpoint_every < 0:
        raise UsageError(f"--checkpoint-every must be >= 0, got {checkpoint_every}")
    if history is None:
        default_name = f"{config.algo}_{config.env}_seed{config.seed}"
        run_dir = prepare_run_folder(output, default_name)
        if output is None and run_dir.name != default_name:
            print(f"note: runs/{default_name} holds an earlier run; this run writes to {run_dir}")
    else:
        run_dir = history.run_dir
    try:
        torch.manual_seed(config.seed)
        shared = {} if setup is None else {"setup": setup}
        env = gym.make(config.env, **{**config.env_kwargs, "progress": progress, **shared})
    except BaseException:
        if history is None:  # an env refused at construction leaves no folder behind (its claim included)
            release_unused(run_dir)
        raise
    resumable = resume_refusal(config.algo, config.hyperparams) is None
    checkpoint = SearchCheckpoint(run_dir, checkpoint_every) if resumable else None
    if history is None:
        lock = lock_folder(run_dir)
        with open(run_dir / "config.yml", "w") as fh:
            yaml.safe_dump(
                {
                    **config.to_dict(),
                    "haq_gym_version": haq_gym.__version__,
                    "command": command if command is not None else command_line(),
                },
                fh,
                sort_keys=False,
            )
    else:
        lock = None
        assert checkpoint is not None  # run_search refused to resume an algorithm that cannot
        kept = history.rows[: checkpoint.episodes]
        keep_rows(run_dir / "episodes.csv", kept)
        print(
            f"resuming {run_dir} from episode {len(kept)} of {config.n_episodes} "
            f"({len(history.rows) - len(kept)} episodes after the last checkpoint are played again)"
        )
    problem = cast("PolicyDecisionEnv", env.unwrapped).problem  # resolve_env_id admits haq-gym envs only
    setup = problem.setup
    np.save(run_dir / "latency_table.npy", problem.cost_model.table)
    plot_latency_table(
        problem.cost_model.table,
        run_dir / "latency_table.png",
        list(problem.layer_names),
        title=f"{config.env} latency table" + (f" ({setup.latency_source})" if setup.latency_source else ""),
    )
    print(f"float model: {setup.checkpoint} (validation top-1 {problem.reference_accuracy:.2f}%)")
    print(f"budget: {problem.budget.to_dict()}  decisions per episode: {len(problem.decisions)}")
    recorder = RunRecorder(
        problem,
        run_dir,
        found_by={"algo": config.algo, "seed": config.seed, "env_id": config.env, "env_kwargs": config.env_kwargs},
    )
    if history is not None:
        assert checkpoint is not None
        restored = restore_history(problem, kept)
        recorder.continue_from(checkpoint.episodes, restored.best_reward, restored.best_episode)
        checkpoint.history = restored.evaluations
    try:
        if watch is not None:
            watch(recorder)
        target: Any = problem if spec.drives == PROBLEM else env
        extra = {} if checkpoint is None else {"checkpoint": checkpoint}
        with _clean_ctrl_c(checkpoint if clean_ctrl_c else None):
            get_runner(config.algo)(
                target,
                episodes=config.n_episodes,
                seed=config.seed,
                hyperparams=config.hyperparams,
                run_dir=run_dir,
                progress=progress,
                writer=recorder.tensorboard_writer,
                **extra,
            )
        recorder.write_hparams(
            {
                "algo": config.algo,
                "env": config.env,
                "seed": config.seed,
                "n_episodes": config.n_episodes,
                **{f"env/{k}": v for k, v in config.env_kwargs.items()},
                **{f"agent/{k}": v for k, v in config.hyperparams.items()},
            }
        )
    except KeyboardInterrupt as err:
        raise SearchInterrupted(
            err.episodes if isinstance(err, SearchInterrupted) else recorder.episodes, run_dir
        ) from None
    finally:
        recorder.close()
        env.close()
        if lock is not None:
            lock.close()
    axis = budgeted_axis(problem.budget.to_dict(), weight_only=problem.config.is_kmeans)
    if recorder.episodes:
        plot_search_progress(
            run_dir / "episodes.csv",
            run_dir / "search_progress.png",
            axis,
            title=f"{config.algo} on {config.env}, seed {config.seed}",
            float_accuracy=problem.reference_accuracy,
        )
    if recorder.best_episode is not None:
        best = PolicyFile.load(run_dir / "best_policy.json")
        plot_policy_bits(
            best,
            run_dir / "best_policy.png",
            [info.kind for info in problem.layer_infos],
            problem.cost_model.layer_shares(best.bits, axis.name),
        )
        print(
            f"best policy: episode {recorder.best_episode}, reward {recorder.best_reward:.4f}, "
            f"top-1 {best.accuracy['search_val_top1']:.2f}% (float {best.accuracy['float_search_val_top1']:.2f}%), "
            f"latency ratio {best.costs['latency_ratio']:.4f}, flash ratio {best.costs['flash_ratio']:.4f}"
        )
    else:
        print("no episode met the budget; no best policy written")
    uniform = uniform_baseline(problem) if baseline else None
    if baseline:
        weight_only = problem.config.is_kmeans
        best_file = PolicyFile.load(run_dir / "best_policy.json") if recorder.best_episode is not None else None
        print(summary_table(best_file, recorder.best_episode, uniform, problem.budget.to_dict(), weight_only))
        if best_file is not None and not weight_only:
            print(f"finetune it: {finetune_command(run_dir / 'best_policy.json', config.seed, config.env_kwargs)}")
    if output is None and history is None:
        point_latest(run_dir)
    print(f"run folder: {run_dir}")
    best_reward = recorder.best_reward if math.isfinite(recorder.best_reward) else None
    return RunResult(run_dir, recorder.episodes, best_reward, recorder.best_episode, uniform)
