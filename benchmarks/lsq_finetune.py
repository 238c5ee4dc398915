"""LSQ finetune targets on the embedded default: uniform W/A accuracy, a searched policy against uniform, QAT step cost.

    python benchmarks/lsq_finetune.py --epochs 3 --seeds 0 1 2 --policy runs/<search run>/best_policy.json

Prints (and writes to ``--output``/report.md), every accuracy the mean over ``--seeds``
(each seed one finetune run) with the per-seed values:

1. test top-1 of the float model and, after the same short LSQ finetune, of uniform
   W8A8, W4A4, W3A3, W2A2 (first layer [8, -1], last [8, 8]), with the gap to float;
2. with ``--policy``: the searched policy finetuned next to the cheapest uniform
   precision ``WwAa`` (every middle layer the same ``[w, a]``, w and a in 2..8) whose
   latency ratio is at least the policy's (same recipe, same seeds);
3. the cost of one QAT training step against one float step (median of interleaved
   repeats on the same batch, same process), as a ratio.

Every finetune is a normal ``python -m haq_gym.finetune`` run (folders under ``--output``);
the reported accuracy is the last epoch's, not the best epoch's (no selection on test).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from haq_gym.cost import BitSerialAccelerator, CostModel, measure_layers
from haq_gym.data import load_dataset, materialize
from haq_gym.finetune.checkpoint import build_quantized_model
from haq_gym.finetune.command import build_parser, run
from haq_gym.models import ensure_default_checkpoint
from haq_gym.models.registry import default_recipe
from haq_gym.policy import PolicyFile, uniform_bits
from haq_gym.quant import calibrate
from haq_gym.runtime import configure_cpu_runtime, torch_device


def finetune_seeds(out: Path, name: str, args: argparse.Namespace, what: list[str]) -> list[float]:
    """Run one finetune per seed (or reuse a finished one); return each run's last-epoch test top-1."""
    accs = []
    for seed in args.seeds:
        folder = out / f"{name}_seed{seed}"
        done = folder / "metrics.csv"
        accs.append(last_top1(done) if done.exists() else finetune(folder, args, what, seed))
    return accs


def summary(accs: list[float]) -> str:
    """``mean ± std (a, b, c)`` of per-seed accuracies."""
    spread = f" ± {statistics.stdev(accs):.2f}" if len(accs) > 1 else ""
    return f"{statistics.mean(accs):.2f}{spread} ({', '.join(f'{a:.2f}' for a in accs)})"


def finetune(folder: Path, args: argparse.Namespace, what: list[str], seed: int) -> float:
    """Run one finetune; return its last epoch's test top-1."""
    cli = what + [
        "--epochs",
        str(args.epochs),
        "--seed",
        str(seed),
        "--output",
        str(folder),
        "--no-progress",
        "--model",
        args.model,
        "--dataset",
        args.dataset,
        "--device",
        args.device,
    ]
    if args.lr is not None:
        cli += ["--lr", str(args.lr)]
    print(f"== python -m haq_gym.finetune {' '.join(cli)}", flush=True)
    if run(build_parser().parse_args(cli)) != 0:
        raise RuntimeError(f"finetune {folder} failed")
    return last_top1(folder / "metrics.csv")


def last_top1(metrics_csv: Path) -> float:
    with open(metrics_csv) as fh:
        return float(list(csv.DictReader(fh))[-1]["test_top1"])


def step_cost_ratio(
    model_name: str, num_classes: int, images: torch.Tensor, labels: torch.Tensor, repeats: int, device: torch.device
) -> tuple[float, float]:
    """Median seconds of a float and a W4A4 LSQ training step on one batch, interleaved."""
    models = {}
    for kind in ("float", "qat"):
        torch.manual_seed(0)
        model, named = build_quantized_model(model_name, 1.0, num_classes, None, "lsq")
        model.to(device)
        layers = [m for _, m in named]
        if kind == "qat":
            for layer, bits in zip(layers, uniform_bits(len(layers), 4, 4), strict=True):
                layer.set_bits(*bits)
            calibrate(model, layers, images)
        model.to(memory_format=torch.channels_last).train()
        models[kind] = (model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9))
    times: dict[str, list[float]] = {"float": [], "qat": []}
    for i in range(repeats + 2):
        for kind, (model, opt) in models.items():
            synchronize(device)
            t0 = time.perf_counter()
            loss = nn.functional.cross_entropy(model(images), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            synchronize(device)
            if i >= 2:  # the first two steps allocate buffers
                times[kind].append(time.perf_counter() - t0)
    return statistics.median(times["float"]), statistics.median(times["qat"])


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mobilenetv2")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument(
        "--bits", type=int, nargs="*", default=[8, 4, 3, 2], help="uniform precisions to finetune (none: skip)"
    )
    p.add_argument("--policy", default=None, help="searched policy JSON to compare with uniform precision")
    p.add_argument("--timing-repeats", type=int, default=10)
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="finetune seeds; accuracies are averaged")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (finetunes and the step timing)")
    p.add_argument("--output", default="benchmark_lsq", help="folder for the finetune runs and report.md (must be new)")
    args = p.parse_args()
    out = Path(args.output)
    if out.exists() and any(out.iterdir()):
        sys.exit(f"error: {out} exists and is not empty; choose another --output")
    out.mkdir(parents=True, exist_ok=True)
    configure_cpu_runtime()

    bundle = load_dataset(args.dataset, None)
    model, named = build_quantized_model(args.model, 1.0, bundle.num_classes, None, "linear")
    _, float_meta = ensure_default_checkpoint(
        args.model,
        1.0,
        args.dataset,
        model,
        bundle,
        recipe=default_recipe(args.model, args.dataset),
        min_accuracy=None,
        device=torch_device(args.device),
    )
    float_top1 = float(float_meta["test_top1"])
    infos = measure_layers(model, named, bundle.image_size)
    costs = CostModel(infos, BitSerialAccelerator().table(infos))
    n = len(named)

    seeds = " ".join(str(x) for x in args.seeds)
    lines = [
        f"Model {args.model} on {args.dataset}, LSQ finetune {args.epochs} epochs, seeds {seeds}, "
        f"device {args.device}; test top-1 of the last epoch, mean ± std over seeds (per seed).",
        "",
        "| precision | test top-1 % | vs float | latency ratio |",
        "|---|---|---|---|",
        f"| float | {float_top1:.2f} | - | - |",
    ]
    for b in args.bits:
        accs = finetune_seeds(out, f"w{b}a{b}", args, ["--w-bits", str(b), "--a-bits", str(b)])
        lat = costs.costs(uniform_bits(n, b, b)).latency_ratio
        lines.append(f"| W{b}A{b} | {summary(accs)} | {statistics.mean(accs) - float_top1:+.2f} | {lat:.3f} |")
        print(lines[-1], flush=True)

    if args.policy is not None:
        policy = PolicyFile.load(args.policy)
        lat_policy = costs.costs(policy.bits).latency_ratio
        pairs = [
            (w, a)
            for w in range(2, 9)
            for a in range(2, 9)
            if costs.costs(uniform_bits(n, w, a)).latency_ratio >= lat_policy - 1e-9
        ]
        w, a = min(pairs, key=lambda p: costs.costs(uniform_bits(n, *p)).latency_ratio)
        uniform = costs.costs(uniform_bits(n, w, a))
        acc_policy = finetune_seeds(out, "searched_policy", args, ["--policy", args.policy])
        acc_uniform = finetune_seeds(out, f"w{w}a{a}", args, ["--w-bits", str(w), "--a-bits", str(a)])
        wins = sum(p > u for p, u in zip(acc_policy, acc_uniform, strict=True))
        lines += [
            "",
            "| searched policy vs uniform | latency ratio | flash ratio | test top-1 % |",
            "|---|---|---|---|",
            f"| searched ({args.policy}) | {lat_policy:.3f} | {costs.costs(policy.bits).flash_ratio:.3f} | "
            f"{summary(acc_policy)} |",
            f"| uniform W{w}A{a} (cheapest uniform at >= the policy's latency) | {uniform.latency_ratio:.3f} | "
            f"{uniform.flash_ratio:.3f} | {summary(acc_uniform)} |",
            "",
            f"Searched policy minus uniform: {statistics.mean(acc_policy) - statistics.mean(acc_uniform):+.2f} "
            f"points on average; ahead on {wins} of {len(args.seeds)} seeds.",
        ]

    images, labels = materialize(bundle.train)
    device = torch_device(args.device)
    batch = images[:64].to(device).contiguous(memory_format=torch.channels_last)
    t_float, t_qat = step_cost_ratio(
        args.model, bundle.num_classes, batch, labels[:64].to(device), args.timing_repeats, device
    )
    lines += [
        "",
        f"Training step, batch 64, median of {args.timing_repeats} interleaved repeats: float {t_float:.3f} s, "
        f"LSQ W4A4 {t_qat:.3f} s, ratio QAT/float {t_qat / t_float:.2f} (target <= 1.5)",
    ]
    report = "\n".join(lines) + "\n"
    (out / "report.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
