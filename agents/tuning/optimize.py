"""Optuna tuning of a search agent's hyperparameters (``train_agent.py --optimize``).

One trial = one hyperparameter set, sampled by :mod:`agents.tuning.hyperparams_sampler`,
evaluated by ordinary search runs (:func:`haq_gym.runs.run_search`, one run folder per seed under
``<output>/trial_<n>/seed_<s>/``) on seeds ``0..n_seeds-1``, the same seeds for every
trial. The objective is the mean over those seeds of the best reward among policies that
met the budget (the run's ``best_policy.json``), to be maximised.

Pruning. The seeds run one after another. Every ``report_every`` evaluations of a run,
and at its end, the trial reports to Optuna at step = evaluations spent by the trial so
far (all seeds; seed ``i`` starts at step ``i * n_episodes``) the mean over the seeds
started so far of their best-so-far feasible reward (finished seeds count with their
final best). Every trial runs the seeds in the same order, so a step means the same
amount of search in every trial. When the pruner says so, :class:`optuna.TrialPruned` is
raised from an observer of the run's policy problem, right after the run's recorder has
recorded the evaluation, which stops the agent (or black-box strategy) at once.
A seed that finds no feasible policy also prunes the trial (it has no objective value).

Trial count. ``n_trials`` is the study's target of finished (complete or pruned) trials,
not a per-worker count: a resumed study continues to it, and every worker stops once it is
reached. A worker whose next trial would exceed it waits while other trials are running
(they may belong to a dead worker, whose trial is then failed and re-queued). Workers
that start a trial at the same instant can overshoot by at most one trial each.

Interruptions. ``kill -9``: the heartbeat of :mod:`agents.tuning.storage` marks the
trial stale, the next trial start fails it and re-queues its parameters. Ctrl-C: the
running trial is failed and re-queued at once, then the worker stops; rerunning the same
command resumes the study.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import inspect
import io
import json
import math
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy
import optuna
import yaml
from optuna.exceptions import ExperimentalWarning
from optuna.trial import TrialState
from tqdm.auto import tqdm

from agents.optuna_samplers import build_sampler
from agents.tuning.hyperparams_sampler import FixedParams, SamplerFn, SearchProblem, get_hyperparams_sampler
from agents.tuning.storage import DEFAULT_JOURNAL_NAME, is_journal_path, open_storage, redact, retry_callback
from haq_gym.experiments.placement import Slot, plan_slots
from haq_gym.runs import RunConfig, RunRecorder, run_search
from haq_gym.util import write_atomic

SAMPLERS = ("tpe", "random", "cmaes", "gp")
PRUNERS = ("median", "halving", "none")
# Trials the median pruner lets finish before it compares (Optuna's default).
MEDIAN_STARTUP_TRIALS = 5
# Random trials before TPE models the space (Optuna's default).
TPE_STARTUP_TRIALS = 10
# The tuner's sampler settings. CMA-ES samples categorical knobs (batch sizes, rollout
# lengths) at random; the docs say so once, so its per-trial warning is off.
SAMPLER_OPTIONS: dict[str, dict[str, Any]] = {
    "tpe": {"n_startup_trials": TPE_STARTUP_TRIALS},
    "cmaes": {"warn_independent_sampling": False},
}
STUDY_RECORD_KEY = "haq_gym_tuning"
MARKER_NAME = "tuning.yml"
POLL_S = 2.0


class WorkerFailed(RuntimeError):
    """A worker process of ``--n-jobs`` exited with an error (its traceback is in the output above)."""


@dataclass(frozen=True)
class TuningSettings:
    """Everything a tuning worker needs (picklable: ``--n-jobs`` hands it to worker processes)."""

    algo: str
    env_id: str
    env_kwargs: dict[str, Any]
    n_episodes: int
    base_hyperparams: dict[str, Any]  # the algorithm's config, under the sampled values
    fixed_hyperparams: dict[str, Any]  # --hyperparams: set on every trial, left out of the search
    output: str
    n_trials: int = 50  # finished (complete or pruned) trials the study should hold
    storage: str | None = None  # None: a journal file in ``output``
    study_name: str | None = None  # None: "<algo>_<env_id>"
    n_seeds: int = 3
    report_every: int = 10
    sampler: str = "tpe"
    pruner: str = "median"
    n_jobs: int = 1
    seed: int | None = None  # sampler seed; None: unseeded
    command: str = ""

    @property
    def name(self) -> str:
        return self.study_name or f"{self.algo}_{self.env_id}"

    @property
    def storage_url(self) -> str:
        return self.storage or os.fspath(Path(self.output) / DEFAULT_JOURNAL_NAME)

    @property
    def search_seeds(self) -> list[int]:
        return list(range(self.n_seeds))

    def study_record(self) -> dict[str, Any]:
        """What defines the objective; a study can only be resumed with the same record."""
        record = {
            "algo": self.algo,
            "env": self.env_id,
            "env_kwargs": self.env_kwargs,
            "n_episodes": self.n_episodes,
            "search_seeds": self.search_seeds,
            "report_every": self.report_every,
            "base_hyperparams": self.base_hyperparams,
            "fixed_hyperparams": self.fixed_hyperparams,
        }
        return json.loads(json.dumps(record))


@dataclass
class TuningResult:
    """What a finished (or resumed-and-finished) tuning left behind."""

    study: optuna.Study
    output: Path
    files: list[Path] = field(default_factory=list)


def build_pruner(name: str, n_episodes: int) -> optuna.pruners.BasePruner:
    """The pruner called ``name`` (one of :data:`PRUNERS`); steps are evaluations.

    ``median`` compares from a third of the first seed's budget on (earlier, agents are still
    in their random warm-up), after :data:`MEDIAN_STARTUP_TRIALS` finished trials;
    ``halving`` is Optuna's asynchronous successive halving with its defaults.
    """
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS, n_warmup_steps=n_episodes // 3)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {name!r}; expected one of {', '.join(PRUNERS)}")


def check_settings(settings: TuningSettings) -> None:
    """Raise a ValueError for anything that would fail later: counts, names, storage, algorithm, output folder."""
    from haq_gym.validation import check_env_kwargs, check_int, check_seed

    for flag, value in (
        ("--n-trials", settings.n_trials),
        ("--n-jobs", settings.n_jobs),
        ("--n-seeds", settings.n_seeds),
        ("--report-every", settings.report_every),
        ("--episodes", settings.n_episodes),
    ):
        check_int(flag, value)
        if value < 1:
            raise ValueError(f"{flag} must be at least 1, got {value}")
    if settings.seed is not None:
        check_seed(settings.seed)
    if settings.sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {settings.sampler!r}; expected one of {', '.join(SAMPLERS)}")
    if settings.pruner not in PRUNERS:
        raise ValueError(f"unknown pruner {settings.pruner!r}; expected one of {', '.join(PRUNERS)}")
    if settings.n_jobs > 1:
        worker_slots(settings)  # more workers than the machine holds, or an unknown device
    if settings.storage_url.startswith("sqlite:") and settings.n_jobs > 1:
        raise ValueError(
            "SQLite storage takes one process at a time; with --n-jobs > 1 use the default journal "
            "file or a postgresql:// storage"
        )
    get_hyperparams_sampler(settings.algo)
    from agents.registry import check_action_mode, check_hyperparam_values, get_spec

    check_hyperparam_values(settings.algo, {**settings.base_hyperparams, **settings.fixed_hyperparams})
    check_action_mode(settings.algo, settings.env_kwargs.get("action_mode", get_spec(settings.algo).action_modes[0]))
    if settings.env_id not in gym.registry:
        import haq_gym

        raise ValueError(f"unknown env {settings.env_id!r}; haq-gym registers {', '.join(sorted(haq_gym.ENV_IDS))}")
    check_env_kwargs(settings.env_id, settings.env_kwargs)
    _check_output_folder(settings)


def worker_slots(settings: TuningSettings) -> list[Slot]:
    """The ``--n-jobs`` workers' places: the env's device (default cpu), ``cores // n_jobs`` threads each."""
    return plan_slots(settings.n_jobs, [settings.env_kwargs.get("device") or "cpu"])


def _marker(settings: TuningSettings) -> dict[str, str]:
    """What ``tuning.yml`` records: the study and its storage (the default journal relative to the folder)."""
    if settings.storage is None:
        storage = f"{DEFAULT_JOURNAL_NAME} in this folder"
    elif is_journal_path(settings.storage):
        storage = os.path.abspath(settings.storage)
    else:
        storage = redact(settings.storage)
    return {"study_name": settings.name, "storage": storage}


def _check_output_folder(settings: TuningSettings) -> None:
    """The output folder must be new, empty, or this study's own (never mixed with another study or run)."""
    out = Path(settings.output)
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    marker_path = out / MARKER_NAME
    if not marker_path.is_file():
        raise FileExistsError(
            f"output folder {settings.output!r} exists and is not a tuning folder; "
            "choose another --output (nothing was written)"
        )
    with open(marker_path) as fh:
        found = yaml.safe_load(fh) or {}
    if found != _marker(settings):
        raise FileExistsError(
            f"output folder {settings.output!r} belongs to study {found.get('study_name')!r} in "
            f"{found.get('storage')!r}; resume it with the same --study-name and --storage, "
            "or choose another --output"
        )


def _write_marker(settings: TuningSettings) -> None:
    out = Path(settings.output)
    out.mkdir(parents=True, exist_ok=True)
    marker_path = out / MARKER_NAME
    if not marker_path.exists():
        write_atomic(marker_path, yaml.safe_dump(_marker(settings), sort_keys=False))


def open_study(
    settings: TuningSettings,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
) -> optuna.Study:
    """Create the study or load it; a loaded study must have been created for the same objective."""
    storage = open_storage(settings.storage_url)
    study = optuna.create_study(
        study_name=settings.name,
        storage=storage,
        sampler=sampler,
        pruner=pruner,
        direction="maximize",
        load_if_exists=True,
    )
    if study.directions != [optuna.study.StudyDirection.MAXIMIZE]:
        raise ValueError(
            f"study {settings.name!r} in {redact(settings.storage_url)} is not a single-objective "
            "maximisation; choose another --study-name"
        )
    record = settings.study_record()
    found = study.user_attrs.get(STUDY_RECORD_KEY)
    if found is None:
        if study.get_trials(deepcopy=False):
            raise ValueError(
                f"study {settings.name!r} in {redact(settings.storage_url)} was not created by "
                "train_agent.py --optimize; choose another --study-name"
            )
        study.set_user_attr(STUDY_RECORD_KEY, record)
        study.set_user_attr("command", settings.command)
        import haq_gym

        study.set_user_attr("haq_gym_version", haq_gym.__version__)
    elif found != record:
        differ = ", ".join(
            f"{key} (study: {found.get(key)!r}, now: {record.get(key)!r})"
            for key in sorted(set(found) | set(record))
            if found.get(key) != record.get(key)
        )
        raise ValueError(
            f"study {settings.name!r} in {redact(settings.storage_url)} was created for another "
            f"objective: {differ}; resume it with the same settings or choose another --study-name"
        )
    return study


class TrialProgress:
    """Reports a trial's best-so-far objective to Optuna as its seeds run, and prunes it when told to."""

    def __init__(self, trial: optuna.Trial, n_seeds: int, n_episodes: int, report_every: int) -> None:
        self.trial = trial
        self.n_seeds = n_seeds
        self.n_episodes = n_episodes
        self.report_every = report_every
        self.seed_bests: list[float] = []
        self.last_step = -1
        self.recorder: RunRecorder | None = None

    def watch(self, recorder: RunRecorder) -> None:
        """Follow the next seed's run: report after every ``report_every`` evaluations its ``recorder`` records."""
        self.recorder = recorder
        recorder.problem.add_observer(lambda outcome: self._on_episode(recorder))

    def _on_episode(self, recorder: RunRecorder) -> None:
        if recorder.episodes % self.report_every == 0:
            self._report(recorder, prune=True)

    def _report(self, recorder: RunRecorder, prune: bool) -> None:
        if not math.isfinite(recorder.best_reward):
            return  # no feasible policy yet: nothing to compare
        step = len(self.seed_bests) * self.n_episodes + recorder.episodes
        if step == self.last_step:
            return
        value = statistics.fmean(self.seed_bests + [recorder.best_reward])
        self.trial.report(value, step)
        self.last_step = step
        if prune and self.trial.should_prune():
            raise optuna.TrialPruned(f"best-so-far {value:.4f} after {step} evaluations")

    def seed_done(self) -> None:
        """Record the finished seed's best (prune if it found no feasible policy)."""
        recorder = self.recorder
        assert recorder is not None, "seed_done() before a run was wrapped"
        if not math.isfinite(recorder.best_reward):
            raise optuna.TrialPruned(f"seed {len(self.seed_bests)} found no policy that meets the budget")
        self._report(recorder, prune=len(self.seed_bests) + 1 < self.n_seeds)
        self.seed_bests.append(float(recorder.best_reward))


class Objective:
    """One trial: sample hyperparameters, run the search on every seed, return the mean best feasible reward."""

    def __init__(self, settings: TuningSettings, problem: SearchProblem, setup: Any = None) -> None:
        self.settings = settings
        self.problem = problem
        self.setup = setup
        self.sample: SamplerFn = get_hyperparams_sampler(settings.algo)
        self.retry = retry_callback()

    def hyperparams(self, trial: optuna.Trial) -> dict[str, Any]:
        """The trial's full hyperparameters: config values, then sampled ones, then the fixed ones."""
        fixed = self.settings.fixed_hyperparams
        sampled = self.sample(FixedParams(trial, fixed), self.problem)
        return {**self.settings.base_hyperparams, **sampled, **fixed}

    def __call__(self, trial: optuna.Trial) -> float:
        try:
            return self._evaluate(trial)
        except KeyboardInterrupt:
            self._requeue(trial)
            raise

    def _requeue(self, trial: optuna.Trial) -> None:
        """Queue the interrupted trial's parameters again (Optuna then marks it FAIL)."""
        running = trial.study.get_trials(deepcopy=True, states=(TrialState.RUNNING,))
        for frozen in running:
            if frozen.number == trial.number:
                self.retry(trial.study, frozen)
                trial.set_user_attr("fail_reason", "interrupted; its parameters were queued again")

    def _evaluate(self, trial: optuna.Trial) -> float:
        hyper = self.hyperparams(trial)
        trial.set_user_attr("hyperparams", json.loads(json.dumps(hyper)))
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        s = self.settings
        progress = TrialProgress(trial, s.n_seeds, s.n_episodes, s.report_every)
        for seed in s.search_seeds:
            config = RunConfig(
                algo=s.algo,
                env=s.env_id,
                seed=seed,
                n_episodes=s.n_episodes,
                env_kwargs=dict(s.env_kwargs),
                hyperparams=dict(hyper),
            )
            run_dir = Path(s.output) / f"trial_{trial.number}" / f"seed_{seed}"
            run_search(
                config,
                os.fspath(run_dir),
                progress=False,
                setup=self.setup,
                watch=progress.watch,
                baseline=False,
                checkpoint_every=0,
            )
            progress.seed_done()
        trial.set_user_attr("seed_best_rewards", progress.seed_bests)
        return statistics.fmean(progress.seed_bests)


def _problem_and_setup(settings: TuningSettings) -> tuple[SearchProblem, Any]:
    """Build the env once: its shape for the search spaces, and its model/evaluator to share between runs.

    Sharing the :class:`~haq_gym.search_setup.SearchSetup` (when the env takes ``setup=``)
    saves rebuilding the model for every run and lets runs reuse each other's evaluations
    (the evaluation of a policy is deterministic, so results do not change).
    """
    env = gym.make(settings.env_id, **{**settings.env_kwargs, "progress": False})
    base = env.unwrapped
    problem = SearchProblem(
        episodes=settings.n_episodes, episode_length=len(base.decisions), min_bit=base.min_bit, max_bit=base.max_bit
    )
    takes_setup = "setup" in inspect.signature(type(base)).parameters
    setup = base.setup if takes_setup else None
    env.close()
    return problem, setup


def _trial_counts(study: optuna.Study) -> dict[TrialState, int]:
    counts = dict.fromkeys(TrialState, 0)
    for t in study.get_trials(deepcopy=False):
        counts[t.state] += 1
    return counts


def trial_sampler_seed(seed: int | None, trials_in_study: int, worker_index: int = 0) -> int | None:
    """The sampler seed of a worker's next trial: derived from ``--seed``, the study's trial count and the worker.

    A resumed study (same ``--seed``) then draws new parameters instead of repeating the
    first run's trials, and the same study history still gives the same draws.
    """
    if seed is None:
        return None
    return int(numpy.random.SeedSequence([seed, trials_in_study, worker_index]).generate_state(1)[0])


def run_worker(
    settings: TuningSettings,
    worker_index: int = 0,
    device: str | None = None,
    on_trial: Callable[[optuna.Study], None] | None = None,
) -> None:
    """Run trials of the study until it holds ``n_trials`` finished ones (see the module docstring).

    The sampler is seeded again before each trial with :func:`trial_sampler_seed`.

    ``device``: where this worker's runs evaluate, in place of ``env_kwargs["device"]`` (the
    study's record keeps the device as given, e.g. ``auto``, so every worker resumes it).
    ``on_trial(study)`` is called after each trial this worker ran (the trials bar).
    """
    run_settings = (
        settings
        if device is None
        else dataclasses.replace(settings, env_kwargs={**settings.env_kwargs, "device": device})
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        study = open_study(
            settings,
            build_sampler(settings.sampler, settings.seed, SAMPLER_OPTIONS.get(settings.sampler)),
            build_pruner(settings.pruner, settings.n_episodes),
        )
        objective: Objective | None = None  # built on first need: a complete study needs no env
        while True:
            optuna.storages.fail_stale_trials(study)
            counts = _trial_counts(study)
            finished = counts[TrialState.COMPLETE] + counts[TrialState.PRUNED]
            if finished >= settings.n_trials:
                return
            if finished + counts[TrialState.RUNNING] >= settings.n_trials:
                time.sleep(POLL_S)  # the last trials are running elsewhere; take over if their worker died
                continue
            if objective is None:
                objective = Objective(run_settings, *_problem_and_setup(run_settings))
            trials = len(study.get_trials(deepcopy=False))
            study.sampler = build_sampler(
                settings.sampler,
                trial_sampler_seed(settings.seed, trials, worker_index),
                SAMPLER_OPTIONS.get(settings.sampler),
            )
            study.optimize(objective, n_trials=1, gc_after_trial=True)
            if on_trial is not None:
                on_trial(study)


def _worker_process(settings: TuningSettings, slot: Slot, device: str | None) -> None:
    from haq_gym.runtime import configure_cpu_runtime

    os.setpgrp()  # Ctrl-C in the terminal reaches the parent only, which passes exactly one SIGINT on
    os.environ.update(slot.environment({}))  # HAQ_GYM_THREADS, as the benchmark grid's workers get it
    configure_cpu_runtime()
    with contextlib.suppress(KeyboardInterrupt):  # the trial was failed and re-queued; the parent reports it
        run_worker(settings, slot.index, device)


def run_workers(settings: TuningSettings, on_poll: Callable[[], None] | None = None) -> None:
    """``n_jobs`` worker processes on this machine (spawned: no state shared with this process).

    Placed like the benchmark grid's workers (:func:`haq_gym.experiments.placement.plan_slots`):
    ``cores // n_jobs`` threads each, and with ``device=auto`` (or several GPUs named by
    ``cuda:N``) worker ``k`` on GPU ``k mod n``. ``on_poll()`` is called every few seconds
    while they run (the trials bar reads the study's storage).
    """
    slots = worker_slots(settings)
    given = settings.env_kwargs.get("device")
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(
            target=_worker_process,
            args=(settings, slot, None if given is None else slot.device),
            name=f"tuning-worker-{slot.index}",
        )
        for slot in slots
    ]
    for w in workers:
        w.start()
    try:
        for w in workers:
            while w.is_alive():
                w.join(timeout=POLL_S)
                if on_poll is not None:
                    on_poll()
    except KeyboardInterrupt:
        for w in workers:
            if w.is_alive():
                os.kill(w.pid, signal.SIGINT)
        for w in workers:  # each fails and re-queues its running trial, then exits
            w.join()
        raise
    failed = [w.name for w in workers if w.exitcode != 0]
    if failed:
        raise WorkerFailed(
            f"tuning worker(s) {', '.join(failed)} failed (see their errors above); "
            "rerun the same command to resume the study"
        )


class TrialsBar:
    """A progress bar of the study's finished trials with the best value so far (read from its storage)."""

    def __init__(self, settings: TuningSettings, enabled: bool) -> None:
        self.settings = settings
        self.bar = tqdm(total=settings.n_trials, desc=f"tuning {settings.algo}", unit="trial", disable=not enabled)

    def update(self, study: optuna.Study | None = None) -> None:
        if self.bar.disable:
            return
        if study is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                study = open_study(self.settings)
        counts = _trial_counts(study)
        self.bar.n = min(counts[TrialState.COMPLETE] + counts[TrialState.PRUNED], self.settings.n_trials)
        if counts[TrialState.COMPLETE]:
            self.bar.set_postfix(best=f"{study.best_value:.4f}", pruned=counts[TrialState.PRUNED], refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def tune(settings: TuningSettings, progress: bool = True) -> TuningResult:
    """Check the settings, run the workers until the study is complete, write the outputs.

    ``progress`` shows a bar of finished trials with the best mean reward so far.
    """
    check_settings(settings)
    if not is_journal_path(settings.storage_url):
        open_storage(settings.storage_url)  # a bad URL or an unreachable server fails before anything is written
    out = Path(settings.output)
    created = not out.exists()
    try:
        _write_marker(settings)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            open_study(settings)  # created once here, not raced by the workers; a mismatch fails here
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    bar = TrialsBar(settings, progress)
    try:
        bar.update()
        if settings.n_jobs == 1:
            run_worker(settings, on_trial=bar.update)
        else:
            run_workers(settings, on_poll=bar.update)
    finally:
        bar.close()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        study = open_study(settings)
    files = write_outputs(study, settings)
    return TuningResult(study, Path(settings.output), files)


# ----- outputs


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One row per trial: number, state, value, timings, parameters, retry origin, worker, per-seed bests."""
    trials = study.get_trials(deepcopy=False)
    param_names = sorted({name for t in trials for name in t.params})
    rows = []
    for t in trials:
        ended = t.datetime_complete and t.datetime_start
        duration = (t.datetime_complete - t.datetime_start).total_seconds() if ended else None
        row = {
            "number": t.number,
            "state": t.state.name,
            "value": t.value,
            "datetime_start": t.datetime_start.isoformat() if t.datetime_start else None,
            "datetime_complete": t.datetime_complete.isoformat() if t.datetime_complete else None,
            "duration_s": None if duration is None else round(duration, 3),
            "retry_of": t.system_attrs.get("failed_trial"),
            "worker": t.user_attrs.get("worker"),
            "seed_best_rewards": " ".join(f"{v:.6f}" for v in t.user_attrs.get("seed_best_rewards", [])),
        }
        row.update({f"params_{name}": t.params.get(name) for name in param_names})
        rows.append(row)
    return rows


def best_hyperparams_yaml(study: optuna.Study, settings: TuningSettings) -> str:
    """The best trial's hyperparameters as a ``configs/<algo>.yml`` entry, keyed by the env id."""
    best = study.best_trial
    finished = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.get_trials(deepcopy=False))
    entry = dict(best.user_attrs["hyperparams"])  # the tuning's episode budget is not a search budget
    header = (
        f"# {settings.algo}: best of Optuna study {settings.name!r} ({finished} finished trials): trial "
        f"{best.number}, mean best feasible reward {best.value:.6f} over seeds {settings.search_seeds}.\n"
        f"# Each trial searched {settings.n_episodes} episodes; n_episodes is left out on purpose, so a search "
        f"run with this file takes configs/{settings.algo}.yml's budget (or --episodes).\n"
        f"# Tuned: {', '.join(sorted(best.params)) or 'nothing'}. "
        f"Paste into configs/{settings.algo}.yml, or run\n"
        f"#   python train_agent.py --algo {settings.algo} --env {settings.env_id} --config <this file>\n"
    )
    return header + yaml.safe_dump({settings.env_id: entry}, sort_keys=False)


def _save_plot(plot: Callable[..., Any], study: optuna.Study, path: Path) -> str | None:
    """Draw an ``optuna.visualization.matplotlib`` plot to ``path``; returns why it was skipped, or None."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    try:
        ax = plot(study)
    except (ValueError, RuntimeError, ZeroDivisionError) as err:
        return str(err) or type(err).__name__
    fig = ax.figure
    fig.set_size_inches(8, 5)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def write_outputs(study: optuna.Study, settings: TuningSettings) -> list[Path]:
    """``trials.csv``, ``best_hyperparams.yml``, ``optimization_history.png``, ``param_importances.png``.

    Files are written atomically (a reader never sees half a file); a plot that cannot be
    drawn yet (e.g. importances need two complete trials with varying parameters) is
    skipped with a note.
    """
    from optuna.visualization import matplotlib as optuna_plots

    out = Path(settings.output)
    written: list[Path] = []
    rows = trial_rows(study)
    if rows:
        path = out / "trials.csv"
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        write_atomic(path, text.getvalue())
        written.append(path)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        print("no complete trial yet: no best_hyperparams.yml or plots")
        return written
    path = out / "best_hyperparams.yml"
    write_atomic(path, best_hyperparams_yaml(study, settings))
    written.append(path)
    for name, plot in (
        ("optimization_history.png", optuna_plots.plot_optimization_history),
        ("param_importances.png", optuna_plots.plot_param_importances),
    ):
        path = out / name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            skipped = _save_plot(plot, study, path)
        if skipped:
            print(f"{name} skipped: {skipped}")
        else:
            written.append(path)
    return written


def summary(result: TuningResult) -> str:
    """A few lines on the study for the terminal."""
    study = result.study
    counts = _trial_counts(study)
    lines = [
        f"study {study.study_name!r}: {counts[TrialState.COMPLETE]} complete, {counts[TrialState.PRUNED]} "
        f"pruned, {counts[TrialState.FAIL]} failed, {counts[TrialState.WAITING]} queued trials"
    ]
    if counts[TrialState.COMPLETE]:
        best = study.best_trial
        lines.append(f"best: trial {best.number}, value {best.value:.6f}, params {best.params}")
    lines += [f"wrote {p}" for p in result.files]
    return "\n".join(lines)


__all__ = [
    "PRUNERS",
    "SAMPLERS",
    "Objective",
    "TrialProgress",
    "TuningResult",
    "TuningSettings",
    "WorkerFailed",
    "build_pruner",
    "check_settings",
    "open_study",
    "run_worker",
    "run_workers",
    "summary",
    "trial_rows",
    "trial_sampler_seed",
    "tune",
    "write_outputs",
]
