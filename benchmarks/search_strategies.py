"""Compare search strategies fairly: same env, same budget in policy evaluations, several seeds.

Each (strategy, seed) is a normal ``train_agent.py`` run with the strategy's configured
hyperparameters, in its own process (``--workers`` at once on this machine, placed on
``--devices``, or as Ray tasks with ``--ray``; docs/grid.md); this script then reads every
run's ``episodes.csv`` and reports the best reward and accuracy among policies that met the
budget after each evaluation budget. A failed run is reported with its log
(``runs/<strategy>_seed<k>.log``) and the others go on; ``--resume`` reruns it.

    # minutes on the embedded default (the numbers in the README):
    python benchmarks/search_strategies.py --strategies random optuna-tpe haq-ddpg --seeds 0 1 --budgets 10 25
    # does HAQ's final-reward relabelling help an SB3 off-policy agent?
    python benchmarks/search_strategies.py --strategies sac sac:episode_reward_relabel=false \\
        --seeds 0 1 2 --budgets 50 100
    # a serious comparison (hours on a CPU):
    python benchmarks/search_strategies.py --strategies haq-ddpg sac td3 ppo maskable-ppo random uniform \\
        optuna-tpe optuna-cmaes optuna-nsga2 greedy-sensitivity --seeds 0 1 2 3 4 --budgets 25 50 100 200 \\
        --env-kwargs latency_budget=0.3 --workers 16 --devices auto
    # the same grid on a Ray cluster (`ray start --head` first; docs/grid.md):
    python benchmarks/search_strategies.py --strategies haq-ddpg sac random --seeds 0 1 2 3 4 --budgets 200 \\
        --ray auto --devices cuda --workers-per-device 4 --cpus-per-run 2

Outputs in ``--output``: ``runs/<strategy>_seed<k>/`` (full run folders), ``results.csv``
(one row per strategy, seed and budget, with the run's wall time), ``summary.md`` (mean and standard deviation over
seeds) and ``best_so_far.png``.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path

from haq_gym.experiments.end_to_end import Strategy
from haq_gym.experiments.jobs import Job, add_grid_arguments, check_reusable_run, grid_settings, is_done, run_jobs
from haq_gym.registration import ENV_IDS

DEFAULT_ENV = "HAQ-MobileNetV2-v0"


def best_so_far(episodes_csv: Path) -> list[tuple[float, float]]:
    """(best feasible reward, its accuracy) after each evaluation; -inf before the first feasible one."""
    out, best = [], (float("-inf"), float("nan"))
    with open(episodes_csv, newline="") as fh:
        for row in csv.DictReader(fh):
            reward = float(row["reward"])
            if row["budget_met"] == "1" and reward > best[0]:
                best = (reward, float(row["accuracy"]))
            out.append(best)
    return out


def at_budget(curve: list[tuple[float, float]], budget: int) -> tuple[float, float]:
    """The best-so-far point after ``budget`` evaluations; NaN for a run that made fewer (never reported as reached)."""
    if len(curve) < budget:
        return float("nan"), float("nan")
    return curve[budget - 1]


def mean_std(values: list[float]) -> str:
    finite = [v for v in values if v == v and v != float("-inf")]
    if not finite:
        return "n/a"
    if len(finite) == 1:
        return f"{finite[0]:.3f}"
    return f"{statistics.mean(finite):.3f} ± {statistics.stdev(finite):.3f}"


def run_settings(strategy: Strategy, env: str, seed: int, episodes: int, env_kwargs: list[str]) -> dict:
    """The settings ``train_agent.py`` records in the job's ``config.yml``: what a reused run must have been made with.

    The worker's ``--device`` is placement, not a setting (:func:`~haq_gym.experiments.jobs.run_settings_differences`).
    """
    from agents.registry import get_spec
    from haq_gym.runs.run_config import algo_defaults, parse_key_values

    hyperparams = algo_defaults(strategy.algo, env)
    hyperparams.pop("n_episodes", None)
    hyperparams.update(parse_key_values(list(strategy.overrides), "--hyperparams"))
    kwargs = parse_key_values(env_kwargs, "--env-kwargs")
    kwargs.setdefault("action_mode", get_spec(strategy.algo).action_modes[0])
    return {
        "algo": strategy.algo,
        "env": env,
        "seed": seed,
        "n_episodes": episodes,
        "env_kwargs": kwargs,
        "hyperparams": hyperparams,
    }


def grid_jobs(
    out: Path, env: str, strategies: list[str], seeds: list[int], episodes: int, env_kwargs: list[str]
) -> list[Job]:
    """One ``train_agent`` run per (strategy, seed) in ``out/runs/<strategy>_seed<k>/``; checks every strategy first."""
    from agents.registry import check_hyperparams

    if env not in ENV_IDS:
        raise ValueError(f"unknown env {env!r}; haq-gym registers {', '.join(ENV_IDS)}")
    jobs = []
    for text in strategies:
        strategy = Strategy.parse(text)
        check_hyperparams(strategy.algo, {o.partition("=")[0].replace("-", "_") for o in strategy.overrides})
        for seed in seeds:
            run_dir = out / "runs" / f"{strategy.label}_seed{seed}"
            args = strategy.search_args(env, seed, episodes, run_dir, env_kwargs)
            settings = run_settings(strategy, env, seed, episodes, env_kwargs)
            jobs.append(
                Job(
                    f"{text} seed {seed}",
                    run_dir,
                    args,
                    {"strategy": text, "seed": seed, "settings": settings},
                    device_flag="--device",
                )
            )
    return jobs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--env", default=DEFAULT_ENV)
    parser.add_argument(
        "--strategies",
        nargs="+",
        required=True,
        help="--algo names, optionally with hyperparameter overrides: sac:episode_reward_relabel=false",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--budgets", nargs="+", type=int, default=[25, 50, 100], help="evaluation budgets to report")
    parser.add_argument("--env-kwargs", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--output", default="benchmark_results", help="folder for runs and reports (must be new)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted benchmark in --output: finished runs are reused, "
        "an unfinished one is moved aside (renamed, not deleted) and run again",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (one line per run remains)")
    add_grid_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.output).absolute()
    try:
        if out.exists() and any(out.iterdir()) and not args.resume:
            raise FileExistsError(f"{out} exists and is not empty; choose another --output or pass --resume")
        if min(args.budgets) < 1:
            raise ValueError(f"--budgets must be at least 1, got {min(args.budgets)}")
        budgets = sorted(set(args.budgets))
        grid = grid_settings(args)
        jobs = grid_jobs(out, args.env, args.strategies, args.seeds, budgets[-1], args.env_kwargs)
        for job in jobs:  # a finished run is reused only if made with these settings (never relabelled)
            if is_done(job):
                check_reusable_run(job.folder, job.meta["settings"])
        out.mkdir(parents=True, exist_ok=True)
        results = run_jobs(jobs, grid, args.resume, "search runs", progress=not args.no_progress)
    except (ValueError, FileExistsError, ImportError, ConnectionError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    failed = [r for r in results if not r.ok]
    finished = [r for r in results if r.ok]
    if finished:
        write_report(out, args, budgets, finished)
    if failed:
        print(
            f"error: {len(failed)} of {len(results)} runs failed ("
            + "; ".join(f"{r.job.name}: {r.log}" for r in failed)
            + "); the report covers the others; rerun with --resume to run the failed ones again",
            file=sys.stderr,
        )
        return 1
    return 0


def write_report(out: Path, args: argparse.Namespace, budgets: list[int], results: list) -> None:
    """``results.csv`` (one row per run and budget), ``summary.md`` and ``best_so_far.png`` from the finished runs."""
    rows, curves = [], {}
    for r in results:
        strategy, seed = r.job.meta["strategy"], r.job.meta["seed"]
        curve = best_so_far(r.job.folder / "episodes.csv")
        curves[(strategy, seed)] = curve
        for b in budgets:
            reward, acc = at_budget(curve, b)
            rows.append(
                {
                    "strategy": strategy,
                    "seed": seed,
                    "budget": b,
                    "evaluations_used": min(b, len(curve)),
                    "best_reward": reward,
                    "best_accuracy": acc,
                    "run_seconds": round(r.seconds, 2),
                }
            )
    with open(out / "results.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        f"Env {args.env}, env kwargs {' '.join(args.env_kwargs) or '(defaults)'}, seeds {args.seeds}.",
        "Best reward (and its validation top-1 %) among policies meeting the budget, mean ± std over seeds.",
        "",
        "| strategy | " + " | ".join(f"{b} evals" for b in budgets) + " |",
        "|---|" + "---|" * len(budgets),
    ]
    for strategy in dict.fromkeys(r.job.meta["strategy"] for r in results):
        cells = []
        for b in budgets:
            sel = [r for r in rows if r["strategy"] == strategy and r["budget"] == b]
            reached = [r for r in sel if r["evaluations_used"] == b]
            cell = (
                f"{mean_std([r['best_reward'] for r in reached])} ({mean_std([r['best_accuracy'] for r in reached])}%)"
            )
            cells.append(cell if len(reached) == len(sel) else f"{cell}, {len(reached)} of {len(sel)} runs reached it")
        lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot_curves(curves, out / "best_so_far.png")


def plot_curves(curves: dict, path: Path) -> None:
    """``best_so_far.png``: per strategy, the best feasible reward after each evaluation (steps, seed band)."""
    from haq_gym.plots import plot_strategy_curves

    by_strategy: dict[str, list[list[float]]] = {}
    for (strategy, _), curve in curves.items():
        by_strategy.setdefault(strategy, []).append([reward for reward, _ in curve])
    plot_strategy_curves(by_strategy, path, title="Search strategies: best feasible reward against evaluations")


if __name__ == "__main__":
    sys.exit(main())
