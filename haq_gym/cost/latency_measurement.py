"""Measure a latency table on this machine: every layer's quantized computation, timed per (w_bit, a_bit).

The analytic accelerator (:mod:`haq_gym.cost.accelerator_model`) stays the default cost
model; this module is for a user who wants the latency of the hardware they run on.
Each quantizable layer is rebuilt as a PyTorch quantized CPU module
(``torch.ao.nn.quantized.Conv2d``/``Linear``, the engine in ``torch.backends.quantized``:
fbgemm/oneDNN on x86, qnnpack on Arm) and called on a quint8 input of the layer's
feature-map size. Its weight is qint8 with integer codes restricted to the signed
``w_bit`` range and its input codes to the unsigned ``a_bit`` range: that is the integer
computation this CPU actually runs for a ``w_bit``/``a_bit`` layer, since its kernels
compute in 8 bits whatever the codes. So on a CPU the table is nearly flat across bit
widths, and that is the honest result: sub-8-bit precision buys latency only on hardware
with low-bit arithmetic (bit-serial accelerators, which the analytic model describes).

    python -m haq_gym.cost.latency_measurement --model mobilenetv2 --output t.npy \\
        --batch-size 1 --repeats 20 --warmup 5 --seed 0

writes ``t.npy`` (HAQ's ``[n_layers, 8, 8]`` format, microseconds, median of the
repeats) and ``t.json`` (machine, torch version, engine, batch, repeats, how it was
measured). Load it with ``gym.make(..., latency_table="t.npy")``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from haq_gym.cost.latency_table import MAX_TABLE_BIT, save_table
from haq_gym.cost.layer_info import LayerInfo, measure_layers

HOW = (
    "Each quantizable layer runs as PyTorch's quantized CPU kernel (torch.ao.nn.quantized Conv2d or Linear) on a "
    "quint8 input of the layer's measured input shape (channels-last for convs), with a qint8 weight, float bias "
    "and quint8 output. Bit widths below 8 are emulated by restricting the integer codes: weights to the signed "
    "w_bit range [-2^(w-1), 2^(w-1)-1], input activations to [0, 2^a-1]. The kernels compute in 8-bit integers "
    "(int32 accumulation) whatever the codes, so on a CPU the latency barely depends on the bit widths. Each entry "
    "is the median wall time, in microseconds, of `repeats` single calls after `warmup` untimed ones; the calls of "
    "a layer's bit-width variants are interleaved (one call of each per round), so a burst of load from other "
    "processes slows a round of all variants rather than one entry."
)


@contextmanager
def _quiet_quantized_tensors() -> Iterator[None]:
    """torch 2.13 warns that quantized tensors are deprecated (still working); the warning says nothing about timing."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        yield


@contextmanager
def quantized_engine(engine: str | None) -> Iterator[str]:
    """Use ``engine`` (``None``: the current one) for PyTorch's quantized kernels inside the block."""
    previous = torch.backends.quantized.engine
    if engine is not None:
        supported = torch.backends.quantized.supported_engines
        if engine not in supported:
            raise ValueError(f"quantized engine {engine!r} is not available here; supported: {', '.join(supported)}")
        torch.backends.quantized.engine = engine
    try:
        yield torch.backends.quantized.engine
    finally:
        torch.backends.quantized.engine = previous


def _weight_codes(shape: tuple[int, ...], w_bit: int, gen: torch.Generator) -> torch.Tensor:
    lo, hi = -(1 << (w_bit - 1)), (1 << (w_bit - 1)) - 1
    return torch.randint(lo, hi + 1, shape, generator=gen).float()


def _activation_codes(shape: tuple[int, ...], a_bit: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 1 << a_bit, shape, generator=gen).float()


def quantized_layer(
    module: nn.Module, info: LayerInfo, w_bit: int, a_bit: int, batch_size: int, gen: torch.Generator
) -> tuple[nn.Module, torch.Tensor]:
    """A PyTorch quantized module with ``module``'s geometry and ``w_bit`` weight codes, and its ``a_bit`` input."""
    import torch.ao.nn.quantized as nnq

    if isinstance(module, nn.Conv2d):
        q: nnq.Conv2d | nnq.Linear = nnq.Conv2d(
            module.in_channels,
            module.out_channels,
            module.kernel_size,
            stride=module.stride,
            padding=module.padding,
            dilation=module.dilation,
            groups=module.groups,
            bias=True,
        )
        shape: tuple[int, ...] = (batch_size, info.in_channels, info.in_h, info.in_w)
    elif isinstance(module, nn.Linear):
        q = nnq.Linear(module.in_features, module.out_features)
        shape = (batch_size, info.in_channels)
    else:
        raise TypeError(f"layer {info.name!r} is a {type(module).__name__}; expected Conv2d or Linear")
    weight = torch.quantize_per_tensor(_weight_codes(tuple(module.weight.shape), w_bit, gen), 1.0, 0, torch.qint8)
    q.set_weight_bias(weight, torch.zeros(module.weight.shape[0]))
    # An output scale that keeps typical outputs inside the quint8 range rather than saturated.
    fan_in = module.weight[0].numel()
    q.scale = float(max(1.0, (fan_in**0.5) * (1 << max(w_bit - 1, 0)) * ((1 << a_bit) - 1) / 64.0))
    q.zero_point = 128
    x = torch.quantize_per_tensor(_activation_codes(shape, a_bit, gen), 1.0, 0, torch.quint8)
    if x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return q, x


def time_interleaved(
    calls: Sequence[tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]], repeats: int, warmup: int
) -> list[float]:
    """Median wall time in microseconds of each ``fn(x)`` of ``calls``.

    After ``warmup`` untimed calls of each, ``repeats`` rounds call every one once: a burst
    of load on a shared machine then slows one round of all variants alike instead of
    every repeat of one variant, and the median discards it.
    """
    times = np.empty((len(calls), repeats))
    with torch.inference_mode():
        for fn, x in calls:
            for _ in range(warmup):
                fn(x)
        for r in range(repeats):
            for c, (fn, x) in enumerate(calls):
                start = time.perf_counter_ns()
                fn(x)
                times[c, r] = (time.perf_counter_ns() - start) / 1000.0
    return [float(v) for v in np.median(times, axis=1)]


def measure_latency_table(
    model: nn.Module,
    layers: Sequence[tuple[str, nn.Module]],
    image_size: int,
    *,
    bit_pairs: Sequence[tuple[int, int]] | None = None,
    layer_indices: Sequence[int] | None = None,
    batch_size: int = 1,
    repeats: int = 20,
    warmup: int = 5,
    seed: int = 0,
    engine: str | None = None,
    progress: bool = False,
) -> np.ndarray:
    """``[n_layers, 8, 8]`` microseconds for the selected layers and ``(w_bit, a_bit)`` pairs; NaN elsewhere.

    ``layers`` are the ``(name, module)`` pairs in env order (``wrap_model``'s result);
    ``bit_pairs`` default to all 64 pairs of 1..8 bits, ``layer_indices`` to every layer.
    ``progress`` shows a bar over the layers (a full table takes minutes).
    """
    if batch_size < 1 or repeats < 1 or warmup < 0:
        raise ValueError(f"need batch_size >= 1, repeats >= 1, warmup >= 0; got {batch_size}, {repeats}, {warmup}")
    pairs = list(bit_pairs) if bit_pairs is not None else [(w, a) for w in range(1, 9) for a in range(1, 9)]
    for w, a in pairs:
        if not (1 <= w <= MAX_TABLE_BIT and 1 <= a <= MAX_TABLE_BIT):
            raise ValueError(f"bit pair ({w}, {a}) is outside 1..{MAX_TABLE_BIT}")
    infos = measure_layers(model, layers, image_size)
    chosen = range(len(layers)) if layer_indices is None else list(layer_indices)
    table = np.full((len(layers), MAX_TABLE_BIT, MAX_TABLE_BIT), np.nan)
    gen = torch.Generator().manual_seed(seed)
    with quantized_engine(engine), _quiet_quantized_tensors():
        for i in tqdm(chosen, desc="latency table", unit="layer", disable=not progress):
            if not 0 <= i < len(layers):
                raise ValueError(f"layer index {i} is outside 0..{len(layers) - 1}")
            calls = [quantized_layer(layers[i][1], infos[i], w, a, batch_size, gen) for w, a in pairs]
            for (w, a), median in zip(pairs, time_interleaved(calls, repeats, warmup), strict=True):
                table[i, w - 1, a - 1] = median
    return table


def fill_from_nearest(table: np.ndarray, measured_bits: Sequence[int]) -> np.ndarray:
    """Fill each ``(w, a)`` entry with the entry of the nearest measured widths (ties go to the larger width)."""
    measured = sorted(set(measured_bits))
    nearest = [min(measured, key=lambda m: (abs(m - b), -m)) for b in range(1, MAX_TABLE_BIT + 1)]
    out: np.ndarray = table.copy()
    for w in range(1, MAX_TABLE_BIT + 1):
        for a in range(1, MAX_TABLE_BIT + 1):
            out[:, w - 1, a - 1] = table[:, nearest[w - 1] - 1, nearest[a - 1] - 1]
    return out


def machine_description() -> dict[str, Any]:
    """What the table was measured on."""
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "machine": platform.machine(),
        "system": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "python": platform.python_version(),
    }


def bit_sensitivity(table: np.ndarray) -> dict[str, Any]:
    """How much the latency depends on the bit widths.

    ``total_2bit_over_8bit``: the model's summed 2/2-bit latency over its 8/8-bit latency
    (about 0.06 for an ideal bit-serial machine, 1 for a CPU). ``median_layer_spread``:
    per layer, the 10th-90th percentile range of the measured pairs over their median;
    the median of that over layers (timing noise when the bits do not matter).
    """
    spreads = []
    for layer in table:
        values = layer[np.isfinite(layer)]
        if values.size:
            lo, mid, hi = np.percentile(values, [10, 50, 90])
            spreads.append(float((hi - lo) / mid))
    both = np.isfinite(table[:, 1, 1]).all() and np.isfinite(table[:, 7, 7]).all()
    return {
        "total_2bit_over_8bit": float(table[:, 1, 1].sum() / table[:, 7, 7].sum()) if both else None,
        "median_layer_spread": float(np.median(spreads)) if spreads else None,
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m haq_gym.cost.latency_measurement",
        description="Measure a HAQ-format latency table with PyTorch's quantized CPU kernels.",
    )
    p.add_argument(
        "--model",
        default="mobilenetv2",
        help="built-in name, torchvision:<name> or package.module:builder (docs/models_and_data.md)",
    )
    p.add_argument(
        "--model-kwargs",
        default=None,
        metavar="YAML",
        help='keywords of a torchvision or import-path model, e.g. "{width_mult: 0.5}"',
    )
    p.add_argument("--width-mult", type=float, default=1.0)
    p.add_argument("--num-classes", type=int, default=10, help="classifier outputs (10 for digits and CIFAR-10)")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--output", required=True, help="the .npy table to write (a .json beside it describes it)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--repeats", type=int, default=20, help="timed calls per entry (the median is kept)")
    p.add_argument("--warmup", type=int, default=5, help="untimed calls before the timed ones")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weight and input codes")
    p.add_argument(
        "--bits",
        type=int,
        nargs="+",
        default=list(range(1, MAX_TABLE_BIT + 1)),
        help="bit widths measured for weights and activations; other entries copy the nearest measured one",
    )
    p.add_argument(
        "--engine",
        choices=torch.backends.quantized.supported_engines,
        help=f"PyTorch quantized engine (default: {torch.backends.quantized.engine})",
    )
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's current setting)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    import yaml

    from haq_gym.models.inspection import check_quantizable
    from haq_gym.models.spec import ModelSpec
    from haq_gym.plots import plot_latency_table
    from haq_gym.quant import wrap_model

    args = build_parser().parse_args(argv)
    if not args.output.endswith(".npy"):
        print(f"error: --output must end in .npy, got {args.output!r}", file=sys.stderr)
        return 2
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        kwargs = yaml.safe_load(args.model_kwargs) if args.model_kwargs else {}
        spec = ModelSpec(args.model, width_mult=args.width_mult, kwargs=kwargs)
        model = spec.build(args.num_classes).eval()
        check_quantizable(model, args.image_size, args.num_classes, label=f"model {args.model!r}")
        layers = wrap_model(model)
        bits = sorted(set(args.bits))
        start = time.perf_counter()
        raw = measure_latency_table(
            model,
            layers,
            args.image_size,
            bit_pairs=[(w, a) for w in bits for a in bits],
            batch_size=args.batch_size,
            repeats=args.repeats,
            warmup=args.warmup,
            seed=args.seed,
            engine=args.engine,
            progress=not args.no_progress,
        )
        elapsed = time.perf_counter() - start
    except (ValueError, TypeError, yaml.YAMLError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    table = fill_from_nearest(raw, bits)
    save_table(table, args.output)
    description = {
        "format": "HAQ latency table [layer, w_bit-1, a_bit-1]",
        "unit": "microseconds",
        "statistic": "median",
        "model": args.model,
        "width_mult": args.width_mult,
        "model_kwargs": kwargs,
        "num_classes": args.num_classes,
        "image_size": args.image_size,
        "layers": [name for name, _ in layers],
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "seed": args.seed,
        "measured_bits": bits,
        "unmeasured_entries": "copied from the nearest measured bit widths (ties to the larger)",
        "engine": args.engine or torch.backends.quantized.engine,
        "torch": torch.__version__,
        "machine": machine_description(),
        "how": HOW,
        "build_time_s": round(elapsed, 2),
        "bit_sensitivity": bit_sensitivity(raw),
    }
    json_path = args.output[:-4] + ".json"
    png_path = args.output[:-4] + ".png"
    plot_latency_table(
        table,
        png_path,
        [name for name, _ in layers],
        title=f"{args.model} latency table ({description['engine']}, batch {args.batch_size}), "
        "each layer relative to its W8A8 latency",
    )
    with open(json_path, "w") as fh:
        json.dump(description, fh, indent=1)
        fh.write("\n")
    s = description["bit_sensitivity"]
    ratio = "n/a" if s["total_2bit_over_8bit"] is None else f"{s['total_2bit_over_8bit']:.3f}"
    print(
        f"wrote {args.output} ({len(layers)} layers, {len(bits)}x{len(bits)} measured pairs, {elapsed:.1f} s), "
        f"{json_path} and {png_path}; 2/2-bit over 8/8-bit total latency {ratio}, "
        f"median per-layer spread across bit widths {s['median_layer_spread']:.1%}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
