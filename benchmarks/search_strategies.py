"""Compare search strategies fairly: same env, same budget in policy evaluations, several seeds.

Each (strategy, seed) is a normal ``train_agent.py`` run with the strategy's configured
hyperparameters; this script then reads every run's ``episodes.csv`` and reports the best
reward and accuracy among policies that met the budget after each evaluation budget.

    # minutes on the embedded default (the numbers in the README):
    python benchmarks/search_strategies.py --strategies random optuna-tpe haq-ddpg --seeds 0 1 --budgets 10 25
    # does HAQ's final-reward relabelling help an SB3 off-policy agent?
    python benchmarks/search_strategies.py --strategies sac sac:episode_reward_relabel=false --seeds 0 1 2 --budgets 50 100
    # a serious comparison (hours on a CPU):
    python benchmarks/search_strategies.py --strategies haq-ddpg sac td3 ppo maskable-ppo random uniform \\
        optuna-tpe optuna-cmaes optuna-nsga2 greedy-sensitivity --seeds 0 1 2 3 4 --budgets 25 50 100 200 \\
        --env-kwargs latency_budget=0.3

Outputs in ``--output``: ``runs/<strategy>_seed<k>/`` (full run folders), ``results.csv``
(one row per strategy, seed and budget), ``summary.md`` (mean and standard deviation over
seeds) and ``best_so_far.png``.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import train_agent  # noqa: E402
from haq_gym.experiments.jobs import set_aside  # noqa: E402
from haq_gym.runtime import configure_cpu_runtime  # noqa: E402


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
    """The best-so-far point after ``budget`` evaluations (a run that stopped early keeps its last point)."""
    if not curve:
        return float("-inf"), float("nan")
    return curve[min(budget, len(curve)) - 1]


def mean_std(values: list[float]) -> str:
    finite = [v for v in values if v == v and v != float("-inf")]
    if not finite:
        return "n/a"
    if len(finite) == 1:
        return f"{finite[0]:.3f}"
    return f"{statistics.mean(finite):.3f} ± {statistics.stdev(finite):.3f}"


def run_finished(run_dir: Path) -> bool:
    """A run folder whose search returned (``train_agent.run`` draws the progress plot last)."""
    return (run_dir / "search_progress.png").exists() and (run_dir / "episodes.csv").exists()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default=train_agent.DEFAULT_ENV)
    parser.add_argument("--strategies", nargs="+", required=True,
                        help="--algo names, optionally with hyperparameter overrides: sac:episode_reward_relabel=false")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--budgets", nargs="+", type=int, default=[25, 50, 100], help="evaluation budgets to report")
    parser.add_argument("--env-kwargs", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--output", default="benchmark_results", help="folder for runs and reports (must be new)")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted benchmark in --output: finished runs are reused, "
                             "an unfinished one is moved aside (renamed, not deleted) and run again")
    args = parser.parse_args()
    out = Path(args.output)
    if out.exists() and any(out.iterdir()) and not args.resume:
        sys.exit(f"error: {out} exists and is not empty; choose another --output or pass --resume")
    configure_cpu_runtime()
    budgets = sorted(set(args.budgets))
    rows, curves = [], {}
    for strategy in args.strategies:
        for seed in args.seeds:
            algo, _, overrides = strategy.partition(":")
            run_dir = out / "runs" / f"{strategy.replace(':', '_').replace(',', '_').replace('=', '-')}_seed{seed}"
            cli = ["--algo", algo, "--env", args.env, "--seed", str(seed), "--episodes", str(budgets[-1]),
                   "--no-progress", "--env-kwargs", *args.env_kwargs]
            if overrides:
                cli += ["--hyperparams", *overrides.split(",")]
            ns = train_agent.build_parser().parse_args(cli)
            config = train_agent.resolve_config(ns)
            if run_finished(run_dir):
                print(f"== {strategy} seed {seed}: reusing the finished run in {run_dir}", flush=True)
            else:
                if run_dir.exists():
                    aside = set_aside(run_dir)
                    print(f"== {strategy} seed {seed}: unfinished run moved to {aside}", flush=True)
                print(f"== {strategy} seed {seed}: {budgets[-1]} evaluations", flush=True)
                train_agent.run(config, str(run_dir), progress=False)
            curve = best_so_far(run_dir / "episodes.csv")
            curves[(strategy, seed)] = curve
            for b in budgets:
                reward, acc = at_budget(curve, b)
                rows.append({"strategy": strategy, "seed": seed, "budget": b, "evaluations_used": min(b, len(curve)),
                             "best_reward": reward, "best_accuracy": acc})
    with open(out / "results.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"Env {args.env}, env kwargs {' '.join(args.env_kwargs) or '(defaults)'}, seeds {args.seeds}.",
             "Best reward (and its validation top-1 %) among policies meeting the budget, mean ± std over seeds.", "",
             "| strategy | " + " | ".join(f"{b} evals" for b in budgets) + " |",
             "|---|" + "---|" * len(budgets)]
    for strategy in args.strategies:
        cells = []
        for b in budgets:
            sel = [r for r in rows if r["strategy"] == strategy and r["budget"] == b]
            cells.append(f"{mean_std([r['best_reward'] for r in sel])} ({mean_std([r['best_accuracy'] for r in sel])}%)")
        lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot_curves(curves, out / "best_so_far.png")


def plot_curves(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4.5))
    strategies = sorted({s for s, _ in curves}, key=list(dict.fromkeys(s for s, _ in curves)).index)
    for i, strategy in enumerate(strategies):
        runs = [[r for r, _ in c] for (s, _), c in curves.items() if s == strategy]
        length = max(len(r) for r in runs)
        padded = np.array([r + [r[-1]] * (length - len(r)) for r in runs], dtype=float)
        padded[~np.isfinite(padded)] = np.nan
        x = np.arange(1, length + 1)
        mean = np.nanmean(padded, axis=0)
        ax.plot(x, mean, label=strategy, color=f"C{i}")
        if len(runs) > 1:
            ax.fill_between(x, np.nanmin(padded, axis=0), np.nanmax(padded, axis=0), color=f"C{i}", alpha=0.15)
    ax.set_xlabel("policy evaluations")
    ax.set_ylabel("best feasible reward (mean, min-max band over seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
