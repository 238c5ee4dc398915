"""End to end on real data: search -> LSQ finetune -> test, against uniform and random policies of the same cost.

    # the README's numbers (one GPU; Fashion-MNIST from `apt-get install dataset-fashion-mnist`):
    python benchmarks/end_to_end.py --env HAQ-MobileNetV2-v0 --dataset fashion-mnist --device cuda --workers 8 \\
        --strategies haq-ddpg sac optuna-tpe greedy-sensitivity --search-seeds 0 1 2 --finetune-seeds 0 1 \\
        --evaluations 120 --epochs 2 --random-policies 24 --output runs/e2e_mobilenetv2
    # minutes on a CPU, nothing to conclude (the embedded digits saturate):
    python benchmarks/end_to_end.py --dataset digits --strategies random --search-seeds 0 --finetune-seeds 0 \\
        --baseline-seeds 0 --evaluations 4 --random-policies 3 --epochs 1 --budget 0.3 --output /tmp/e2e_demo

The plan (uniform curve and budget, searches, finetunes, optional proxies) is described in
:mod:`haq_gym.experiments.end_to_end`. ``--resume`` continues in ``--output``: finished runs
are reused, unfinished ones are set aside (renamed) and run again. ``--report-only`` rewrites
results.csv, summary.md and the figures from the run folders.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from pathlib import Path

from haq_gym.experiments.end_to_end import EndToEnd, EndToEndSettings
from haq_gym.experiments.jobs import add_grid_arguments, grid_settings
from haq_gym.experiments.report import write_report
from haq_gym.runs import UsageError, parse_key_values
from haq_gym.runtime import configure_cpu_runtime


def parse_uniform(text: str) -> tuple[int, int]:
    """``W3A4`` -> ``(3, 4)``."""
    match = re.fullmatch(r"[wW](\d+)[aA](\d+)", text)
    if match is None:
        raise ValueError(f"--uniform expects WwAa such as W4A4, got {text!r}")
    return int(match[1]), int(match[2])


def parse_proxies(items: list[str]) -> dict[str, dict]:
    """``NAME:key=value,key=value`` -> ``{NAME: {key: value}}`` (``NAME:`` alone keeps the env defaults)."""
    out = {}
    for item in items:
        name, sep, rest = item.partition(":")
        if not sep or not name:
            raise ValueError(f"--proxies expects NAME:key=value,..., got {item!r}")
        out[name] = parse_key_values([kv for kv in rest.split(",") if kv], "--proxies")
    return out


def build_parser() -> argparse.ArgumentParser:
    d = EndToEndSettings()
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--env", default=d.env, help="a linear haq-gym env id (fixes the model)")
    p.add_argument("--dataset", default=d.dataset)
    p.add_argument("--data-root", default=None, help="dataset folder (fashion-mnist: default the Debian package's)")
    p.add_argument(
        "--checkpoint",
        default=None,
        help="float checkpoint to start every search and finetune from (default: the cached default model)",
    )
    p.add_argument(
        "--budget",
        type=float,
        default=None,
        help="latency budget ratio; default: chosen on the validation split from the uniform curve",
    )
    p.add_argument(
        "--gap",
        type=float,
        default=d.gap,
        help="auto budget: validation points the uniform precision must lose against float",
    )
    p.add_argument("--strategies", nargs="+", default=list(d.strategies), help="ALGO or ALGO:key=value,...")
    p.add_argument("--search-seeds", type=int, nargs="+", default=list(d.search_seeds))
    p.add_argument("--finetune-seeds", type=int, nargs="+", default=list(d.finetune_seeds))
    p.add_argument(
        "--baseline-seeds",
        type=int,
        nargs="+",
        default=list(d.baseline_seeds),
        help="finetune seeds of the cost-matched uniform precision",
    )
    p.add_argument("--evaluations", type=int, default=d.evaluations, help="policy evaluations per search")
    p.add_argument(
        "--random-policies",
        type=int,
        default=d.random_policies,
        help="random policies meeting the budget, each finetuned once (0: none)",
    )
    p.add_argument("--epochs", type=int, default=d.epochs, help="LSQ finetune epochs for every policy")
    p.add_argument("--lr", type=float, default=None, help="finetune learning rate (default: the finetune's)")
    p.add_argument("--batch-size", type=int, default=None, help="finetune batch size (default: the finetune's)")
    p.add_argument(
        "--uniform",
        nargs="+",
        default=[f"W{w}A{a}" for w, a in d.uniform],
        metavar="WxAy",
        help="uniform precisions of the curve, e.g. W3A3 W4A4",
    )
    p.add_argument("--env-kwargs", nargs="*", default=[], metavar="KEY=VALUE", help="other env keywords")
    p.add_argument(
        "--proxies",
        nargs="*",
        default=[],
        metavar="NAME:KEY=VALUE,...",
        help="other search rewards to score the policies with, e.g. lsq:quantizer=lsq",
    )
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the random policies and the bootstrap")
    p.add_argument("--reps", type=int, default=20000, help="bootstrap resamples")
    p.add_argument("--machine", default="", help="machine description for the report (e.g. '1x H200')")
    p.add_argument("--output", default="runs/end_to_end", help="benchmark folder")
    p.add_argument("--resume", action="store_true", help="continue in --output (same settings)")
    p.add_argument("--report-only", action="store_true", help="only rewrite the report from --output")
    p.add_argument("--no-progress", action="store_true")
    add_grid_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = shlex.join(["python", "benchmarks/end_to_end.py", *(sys.argv[1:] if argv is None else argv)])
    try:
        if not args.report_only:
            settings = EndToEndSettings(
                env=args.env,
                dataset=args.dataset,
                data_root=args.data_root,
                checkpoint=args.checkpoint,
                budget=args.budget,
                gap=args.gap,
                strategies=tuple(args.strategies),
                search_seeds=tuple(args.search_seeds),
                finetune_seeds=tuple(args.finetune_seeds),
                baseline_seeds=tuple(args.baseline_seeds),
                evaluations=args.evaluations,
                random_policies=args.random_policies,
                epochs=args.epochs,
                lr=args.lr,
                batch_size=args.batch_size,
                uniform=tuple(parse_uniform(u) for u in args.uniform),
                env_kwargs=parse_key_values(args.env_kwargs, "--env-kwargs"),
                proxies=parse_proxies(args.proxies),
                seed=args.seed,
            )
            configure_cpu_runtime()
            bench = EndToEnd(
                settings, args.output, grid_settings(args), resume=args.resume, progress=not args.no_progress
            )
            with open(Path(args.output) / "commands.txt", "a") as fh:  # every invocation, resumes included
                fh.write(command + "\n")
            bench.run()
        elif not (Path(args.output) / "plan.json").exists():
            raise FileNotFoundError(f"{args.output} holds no end-to-end benchmark (no plan.json)")
        print(write_report(args.output, reps=args.reps, seed=args.seed, command=command, machine=args.machine))
    except (
        UsageError,
        ValueError,
        FileNotFoundError,
        FileExistsError,
        RuntimeError,
        ImportError,
        ConnectionError,
    ) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # an unwritable --output, a full disk
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
