"""Search a mixed-precision policy with an agent of the zoo and write a run folder.

    python train_agent.py --algo haq-ddpg --env HAQ-MobileNetV2-v0 --seed 0
    python train_agent.py --env-kwargs latency_budget=0.4 flash_budget=0.5 --hyperparams warmup=10
    python train_agent.py --config runs/haq-ddpg_HAQ-MobileNetV2-v0_seed0/config.yml --output runs/repeat
    python train_agent.py --algo haq-ddpg --optimize --n-trials 50 --n-seeds 3 --episodes 60   # tune (docs/tuning.md)
    python train_agent.py --algo haq-ddpg --config runs/tune_haq-ddpg_HAQ-MobileNetV2-v0/best_hyperparams.yml

The run folder holds: ``config.yml`` (everything needed to repeat the run), ``episodes.csv``,
``best_policy.json``, ``best_policy.png``, ``search_progress.png``, ``latency_table.npy``,
the trained agent (``agent.pt``, or ``agent.zip`` for stable-baselines3 agents; black-box
searches have none) and TensorBoard events under ``tensorboard/``.

This script only parses its flags into a :class:`~haq_gym.runs.RunConfig` and calls
:func:`haq_gym.runs.run_search` (the library owns the run).

``--optimize`` tunes the algorithm's own hyperparameters with Optuna instead (one trial =
search runs on several seeds with sampled hyperparameters); see :mod:`agents.tuning` and
docs/tuning.md.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from typing import Any

import yaml

from haq_gym.registration import resolve_env_id
from haq_gym.runs.run_config import (
    DEFAULT_ALGO,
    DEFAULT_ENV,
    RunConfig,
    UsageError,
    algo_defaults,
    command_line,
    parse_key_values,
    yaml_problem,
)

__all__ = ["UsageError", "algo_defaults", "build_parser", "command_line", "main", "parse_key_values", "resolve_config"]


def _is_hyperparams_table(loaded: Any) -> bool:
    """Whether a YAML document is in the ``configs/<algo>.yml`` format: env ids (or ``default``) -> mappings."""
    return isinstance(loaded, dict) and bool(loaded) and all(isinstance(v, dict) for v in loaded.values())


def resolve_config(args: argparse.Namespace) -> dict[str, Any]:
    """Merge, in increasing priority: algorithm YAML, ``--config``, command-line flags.

    ``--config`` is either a run's ``config.yml`` or a table in the ``configs/<algo>.yml``
    format (such as the ``best_hyperparams.yml`` of ``--optimize``), which then replaces
    ``configs/<algo>.yml`` and needs ``--algo``.
    """
    base: dict[str, Any] = {}
    table: dict[str, Any] | None = None
    if args.config:
        try:
            with open(args.config) as fh:
                loaded = yaml.safe_load(fh) or {}
        except FileNotFoundError:
            raise UsageError(f"--config {args.config!r} does not exist") from None
        except yaml.YAMLError as err:
            raise UsageError(f"--config {args.config!r} is not valid YAML ({yaml_problem(err)})") from None
        if isinstance(loaded, dict) and "algo" in loaded:
            base = loaded
        elif _is_hyperparams_table(loaded):
            table = loaded
        else:
            raise UsageError(
                f"--config {args.config!r} is neither a haq-gym run config (no 'algo' key) nor a "
                "configs/<algo>.yml table (env ids mapping to hyperparameters)"
            )
    algo = args.algo or base.get("algo", DEFAULT_ALGO)
    try:
        env_id = resolve_env_id(args.env or base.get("env", DEFAULT_ENV))
    except ValueError as err:
        raise UsageError(str(err)) from None
    if table is not None:
        if not args.algo:
            raise UsageError(
                f"--config {args.config!r} is a hyperparameter table, which does not name its algorithm: pass --algo"
            )
        if env_id not in table and "default" not in table:
            raise UsageError(f"--config {args.config!r} has no entry for {env_id} and no 'default' entry")
        hyper = dict(table.get(env_id, table.get("default")))
    else:
        hyper = algo_defaults(algo, env_id) if not base else {}
    hyper.update(base.get("hyperparams", {}))
    hyper.update(parse_key_values(args.hyperparams, "--hyperparams"))
    n_episodes = hyper.pop("n_episodes", None)
    if args.episodes is not None:
        n_episodes = args.episodes
    elif base.get("n_episodes") is not None:
        n_episodes = base["n_episodes"]
    elif n_episodes is None and table is not None:  # a tuned table leaves the search budget to the algorithm's config
        n_episodes = algo_defaults(algo, env_id).get("n_episodes")
    if n_episodes is None:
        from haq_gym.algo_configs import algo_config_path

        source = args.config if table is not None or base else algo_config_path(algo)
        raise UsageError(f"no episode budget: pass --episodes ({source} has no n_episodes for {env_id})")
    env_kwargs = dict(base.get("env_kwargs", {}))
    env_kwargs.update(parse_key_values(args.env_kwargs, "--env-kwargs"))
    if getattr(args, "device", None):
        from haq_gym.validation import ENV_KEYWORD_CHECKS

        try:
            ENV_KEYWORD_CHECKS["device"](args.device)
        except ValueError as err:
            raise UsageError(f"--device: {err}") from None
        env_kwargs["device"] = args.device
    seed = args.seed if args.seed is not None else base.get("seed", 0)
    return {
        "algo": algo,
        "env": env_id,
        "seed": seed,
        "n_episodes": n_episodes,
        "env_kwargs": env_kwargs,
        "hyperparams": hyper,
    }


def build_parser() -> argparse.ArgumentParser:
    from agents.registry import algo_names

    p = argparse.ArgumentParser(
        description="Search a mixed-precision quantization policy (HAQ) with an agent.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    p.add_argument("--algo", choices=algo_names(), help=f"search algorithm (default {DEFAULT_ALGO})")
    p.add_argument("--env", help=f"registered env id, or module:EnvId as gym.make takes it (default {DEFAULT_ENV})")
    p.add_argument("-n", "--episodes", type=int, help="episodes = policy evaluations (default: the algorithm's config)")
    p.add_argument("--seed", type=int, help="random seed (default 0); the same seed on CPU repeats the run")
    p.add_argument("--output", help="run folder (must not exist or be empty; default runs/<algo>_<env>_seed<seed>)")
    p.add_argument(
        "--env-kwargs",
        nargs="*",
        metavar="KEY=VALUE",
        help="env keywords, e.g. latency_budget=0.4 (key:value also works)",
    )
    p.add_argument(
        "--hyperparams",
        nargs="*",
        metavar="KEY=VALUE",
        help="override algorithm hyperparameters (key=value or key:value)",
    )
    p.add_argument(
        "--config",
        help="repeat a run: its config.yml (flags given here still override); or a table "
        "in the configs/<algo>.yml format, e.g. a tuning's best_hyperparams.yml "
        "(needs --algo)",
    )
    p.add_argument(
        "--device",
        help="cpu, cuda, cuda:N or auto (CUDA when available): where the env evaluates "
        "policies (default cpu; same as --env-kwargs device=...); the agents' "
        "small networks stay on the CPU unless --hyperparams device=cuda "
        "(haq-ddpg and the SB3 agents)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue a killed or interrupted search run from its latest checkpoint to its episode "
        "budget, with its own config.yml (no other run settings)",
    )
    p.add_argument(
        "--checkpoint-every",
        type=int,
        metavar="K",
        help="checkpoint the agent every K episodes for --resume (default 10; 0: only on Ctrl-C)",
    )
    tuning = p.add_argument_group(
        "hyperparameter tuning (--optimize)",
        "Tune the algorithm's own hyperparameters with Optuna: each trial runs the search with sampled "
        "hyperparameters on seeds 0..N-1 (--episodes each) and scores the mean best feasible reward. --output is "
        "the tuning folder, --seed seeds the sampler, --hyperparams KEY=VALUE are fixed and not searched. "
        "See docs/tuning.md.",
    )
    tuning.add_argument("--optimize", action="store_true", help="tune hyperparameters instead of one search run")
    tuning.add_argument(
        "--n-trials",
        type=int,
        metavar="N",
        help="finished trials the study should hold; a resumed study continues to it (default 50)",
    )
    tuning.add_argument("--n-jobs", type=int, metavar="J", help="worker processes on this machine (default 1)")
    tuning.add_argument("--sampler", help="tpe, random, cmaes or gp (default tpe)")
    tuning.add_argument("--pruner", help="median, halving or none (default median)")
    tuning.add_argument(
        "--storage",
        metavar="URL",
        help="journal file (*.log), sqlite:///PATH or postgresql://USER@HOST/DB (default: <output>/study.log)",
    )
    tuning.add_argument("--study-name", metavar="NAME", help="study to create or resume (default <algo>_<env>)")
    tuning.add_argument(
        "--n-seeds", type=int, metavar="N", help="search runs per trial, seeds 0..N-1, averaged (default 3)"
    )
    tuning.add_argument(
        "--report-every",
        type=int,
        metavar="K",
        help="report the best-so-far reward to the pruner every K evaluations (default 10)",
    )
    return p


# The tuning flags, named as the agents.tuning.TuningSettings fields they set.
TUNING_FLAGS = ("n_trials", "n_jobs", "sampler", "pruner", "storage", "study_name", "n_seeds", "report_every")


def tuning_settings(args: argparse.Namespace, config: dict[str, Any]) -> Any:
    """The :class:`agents.tuning.TuningSettings` of an ``--optimize`` command line."""
    from agents.registry import get_spec
    from agents.tuning import TuningSettings

    fixed = parse_key_values(args.hyperparams, "--hyperparams")
    env_kwargs = dict(config["env_kwargs"])
    env_kwargs.setdefault("action_mode", get_spec(config["algo"]).action_modes[0])
    study_name = args.study_name or f"{config['algo']}_{config['env']}"
    given = {flag: getattr(args, flag) for flag in TUNING_FLAGS if getattr(args, flag) is not None}
    return TuningSettings(
        algo=config["algo"],
        env_id=config["env"],
        env_kwargs=env_kwargs,
        n_episodes=config["n_episodes"],
        base_hyperparams={k: v for k, v in config["hyperparams"].items() if k not in fixed},
        fixed_hyperparams=fixed,
        output=args.output or os.path.join("runs", f"tune_{study_name}"),
        seed=args.seed,
        command=command_line(),
        **given,
    )


def optimize(args: argparse.Namespace, config: dict[str, Any]) -> int:
    """``--optimize``: run or resume the tuning study; returns the exit code."""
    from agents.tuning import WorkerFailed, summary, tune

    settings = tuning_settings(args, config)
    try:
        result = tune(settings, progress=not args.no_progress)
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: running trials were failed and their parameters queued again; rerun the same command "
            f"to resume study {settings.name!r}",
            file=sys.stderr,
        )
        return 130
    except WorkerFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(summary(result))
    return 0


# Flags that set up a new run; --resume takes the run's own settings and refuses them.
RUN_FLAGS = (
    "--algo",
    "--env",
    "--episodes",
    "--seed",
    "--output",
    "--env-kwargs",
    "--hyperparams",
    "--config",
    "--device",
    "--optimize",
)


def main(argv: list[str] | None = None) -> int:
    from haq_gym.runs import run_search
    from haq_gym.runs.checkpoint import DEFAULT_CHECKPOINT_EVERY, SearchInterrupted
    from haq_gym.runs.resume import RunFinished
    from haq_gym.runtime import configure_cpu_runtime

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if not args.optimize:
            given = [f"--{flag.replace('_', '-')}" for flag in TUNING_FLAGS if getattr(args, flag) is not None]
            if given:
                raise UsageError(f"{', '.join(given)} only make sense with --optimize")
        if args.optimize and args.checkpoint_every is not None:
            raise UsageError("--checkpoint-every is for search runs; tuning trials are not checkpointed")
        every = DEFAULT_CHECKPOINT_EVERY if args.checkpoint_every is None else args.checkpoint_every
        if args.resume is not None:
            given = [
                flag for flag in RUN_FLAGS if getattr(args, flag.lstrip("-").replace("-", "_")) not in (None, False)
            ]
            if given:
                raise UsageError(f"--resume continues the run with its own config.yml; drop {', '.join(given)}")
            configure_cpu_runtime()
            run_search(
                None, progress=not args.no_progress, resume=args.resume, checkpoint_every=every, clean_ctrl_c=True
            )
            return 0
        config = resolve_config(args)
        if args.optimize:  # before the run's own checks: "nothing to tune" says more than a bad hyperparameter
            from agents.tuning.hyperparams_sampler import get_hyperparams_sampler

            get_hyperparams_sampler(config["algo"])
        run_config = RunConfig.from_dict(config)
        run_config.validate()
        if args.checkpoint_every is not None:
            from agents.registry import resume_refusal

            refusal = resume_refusal(run_config.algo, run_config.hyperparams)
            if refusal is not None:
                raise UsageError(f"--checkpoint-every: {refusal}")
        configure_cpu_runtime()
        if args.optimize:
            return optimize(args, config)
        run_search(run_config, args.output, progress=not args.no_progress, checkpoint_every=every, clean_ctrl_c=True)
    except SearchInterrupted as stop:
        print(
            f"\ninterrupted at episode {stop.episodes}; resume with: python train_agent.py --resume "
            f"{shlex.quote(str(stop.run_dir))}",
            file=sys.stderr,
        )
        return 130
    except KeyboardInterrupt:
        print("\ninterrupted before the search started; nothing was searched", file=sys.stderr)
        return 130
    except RunFinished as done:
        print(done)
        return 0
    except (UsageError, ValueError, OSError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
