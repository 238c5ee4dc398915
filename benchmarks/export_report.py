"""Integer and ONNX export of a default model: agreement with fake-quant, file size against the flash cost, speed.

For each policy (a searched policy JSON, or uniform W8A8 and W4A4 by default) on the
cached default float model with HAQ's calibrated linear quantizers (or another family),
prints: fake-quant top-1 (float32, and float64 with the same quantized weights),
integer top-1, prediction agreement, per-layer code agreement (teacher-forced: each
layer fed the integer model's input codes; free-running) with the largest distance of a
mismatch from a rounding tie, the packed file's bytes against the flash cost model, and
the integer inference time on the test split; then the QDQ ONNX model in onnxruntime
(CPU): predictions identical to the fake-quant model (float input, as finetuned),
free-running per-layer code agreement and latency per image. A model the integer
exporter does not handle gets the ONNX part only.

    python benchmarks/export_report.py                       # uniform W8A8 and W4A4
    python benchmarks/export_report.py --policy runs/<run>/best_policy.json
    python benchmarks/export_report.py --uniform 4 4 --quantizer pot --fold-bn
    python benchmarks/export_report.py --uniform 8 8 --log8-every 3 --json report.json
    python benchmarks/export_report.py --model resnet20 --uniform 8 8 --uniform 4 4
    python benchmarks/export_report.py --model resnet18 --mixed 0 --test-images 90 --layer-images 8

Quick mode for a loaded CPU: ``--test-images N`` evaluates the first ``N`` test images
only (the count is printed with every figure), ``--layer-images`` bounds the per-layer
comparison, and ``--mixed SEED`` is a random mixed policy (first layer ``[8, -1]``, last
``[8, 8]``, the rest 2..8 bits drawn from ``SEED``), for networks without a searched policy.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from haq_gym.export.build import ExportError, export_integer_model, fold_batchnorm
from haq_gym.export.compare import compare_models, fake_quant_input, float64_reference
from haq_gym.export.packed_file import encode
from haq_gym.export.source import ExportSource, recalibrate, source_from_policy
from haq_gym.policy import PolicyFile, uniform_bits
from haq_gym.quant import apply_policy
from haq_gym.quant.families import family_names
from haq_gym.quant.log_quantizer import LogWeightQuantizer
from haq_gym.runtime import configure_cpu_runtime


def mixed_bits(num_layers: int, seed: int) -> list[list[int]]:
    """A random mixed policy: HAQ's fixed first and last layers, the others 2..8 weight and activation bits."""
    gen = torch.Generator().manual_seed(seed)
    middle = torch.randint(2, 9, (num_layers - 2, 2), generator=gen).tolist()
    return uniform_bits(num_layers, 8, 8)[:1] + middle + uniform_bits(num_layers, 8, 8)[-1:]


def prepare(args: argparse.Namespace, uniform: tuple[int, int] | None, mixed: int | None = None) -> ExportSource:
    kwargs = {
        "model": args.model,
        "width_mult": args.width_mult,
        "calibration_size": args.calibration_size,
        "quantizer": args.quantizer,
        "progress": True,
    }
    if args.policy:
        source = source_from_policy(PolicyFile.load(args.policy), **kwargs)
    elif mixed is not None:  # calibrated as for any policy, then the mixed bits (what source_from_policy does)
        source = source_from_policy(uniform=(8, 8), **kwargs)
        source.bits = mixed_bits(len(source.layers), mixed)
        apply_policy([m for _, m in source.layers], source.bits)
        source.description = source.description.replace("uniform W8A8", f"random mixed 2..8-bit (seed {mixed})")
    else:
        source = source_from_policy(uniform=uniform, **kwargs)
    if args.fold_bn:
        fold_batchnorm(source.model)
        recalibrate(source)
        source.description += ", BN folded"
    if args.log8_every:
        for i, (_, layer) in enumerate(source.layers[1:-1], start=1):
            if i % args.log8_every == 0 and layer.w_bit == 8:
                layer.set_quantizers(LogWeightQuantizer(), layer.input_quantizer)
        source.description += f", log8 weights on every {args.log8_every}th 8-bit layer"
    return source


def report(args: argparse.Namespace, source: ExportSource) -> dict:
    print(f"\n=== {source.description}")
    images, labels = source.test_split()
    if args.test_images:
        images, labels = images[: args.test_images], labels[: args.test_images]
    print(f"test images: {len(images)}{' (the first of the split, --test-images)' if args.test_images else ''}")
    result = {
        "policy": source.description,
        "bits": source.bits,
        "images": len(images),
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
    }
    try:
        result.update(integer_report(args, source, images, labels))
    except ExportError as err:
        print(f"integer export: {err}")
        result["integer_export"] = str(err)
    if not args.no_onnx:
        result.update(onnx_report(args, source, images, labels))
    return result


def onnx_report(args: argparse.Namespace, source: ExportSource, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """The QDQ ONNX model in onnxruntime against the fake-quant model (float input), and its latency."""
    from haq_gym.export.onnx_model import build_onnx_model, compare_onnx, onnx_logits, open_session

    proto = build_onnx_model(source.model, source.layers, tuple(images.shape[1:]))
    session = open_session(proto)
    onnx_logits(session, images[:8], args.batch_size)  # warm-up
    start = time.perf_counter()
    pred = onnx_logits(session, images, args.batch_size).argmax(dim=1)
    ort_s = time.perf_counter() - start
    cmp = compare_onnx(source.model, source.layers, images, labels, batch_size=args.batch_size, progress=True)
    n = len(images)
    top1 = 100.0 * float((pred == labels).sum()) / n
    print(
        f"onnxruntime {proto.ByteSize():,} bytes: top-1 {top1:.2f}% vs fake-quant (float input) "
        f"{cmp.fake_top1:.2f}%, identical predictions {cmp.identical_predictions}/{n}, layer-input codes equal "
        f"(free-running) {100 * cmp.code_agreement:.4f}%, largest logit difference {cmp.max_logit_diff:.2g}; "
        f"{1000 * ort_s / n:.2f} ms/image"
    )
    return {
        "onnx_bytes": proto.ByteSize(),
        "onnx_top1": top1,
        "fake_quant_float_input_top1": cmp.fake_top1,
        "onnx_identical_predictions": cmp.identical_predictions,
        "onnx_code_agreement": cmp.code_agreement,
        "onnx_max_logit_diff": cmp.max_logit_diff,
        "onnx_seconds": ort_s,
    }


def integer_report(args: argparse.Namespace, source: ExportSource, images: torch.Tensor, labels: torch.Tensor) -> dict:
    start = time.perf_counter()
    im = export_integer_model(source.model, source.layers, source.calibration_images, bias_shift=args.bias_shift)
    export_s = time.perf_counter() - start
    data, sizes = encode(im.layers, im)
    weights_only, _ = encode(im.layers)
    flash_bytes = (source.flash_bits + 7) // 8

    start = time.perf_counter()
    _, pred = im.predict(images, args.batch_size)
    int_s = time.perf_counter() - start
    start = time.perf_counter()
    with torch.no_grad():
        f32 = source.model(fake_quant_input(im, images)).argmax(dim=1)
    fake_s = time.perf_counter() - start
    exact, exact_layers = float64_reference(source.model, source.layers)
    with torch.no_grad():
        f64 = exact(fake_quant_input(im, images, torch.float64)).argmax(dim=1)
    n = len(images)

    def top1(p: torch.Tensor) -> float:
        return 100.0 * float((p == labels).sum()) / n

    result = {
        "fake_quant_top1": top1(f32),
        "fake_quant_float64_top1": top1(f64),
        "integer_top1": top1(pred),
        "identical_predictions_float32": int((pred == f32).sum()),
        "identical_predictions_float64": int((pred == f64).sum()),
        "float32_vs_float64_predictions": int((f32 == f64).sum()),
        "file_bytes": len(data),
        "header_bytes": sizes.header,
        "weight_bytes": sizes.weights,
        "weights_only_file_bytes": len(weights_only),
        "integer_model_bytes": sizes.integer_model,
        "bias_bytes": sizes.bias,
        "requant_bytes": sizes.requant,
        "flash_cost_model_bits": source.flash_bits,
        "flash_cost_model_bytes": flash_bytes,
        "requantisations": im.meta["requants"],
        "shift_only_requantisations": im.meta["shift_only_requants"],
        "bias_shifts": sorted({op.bias_shift for op in im.ops if hasattr(op, "bias_shift")}),
        "export_seconds": export_s,
        "integer_seconds": int_s,
        "fake_quant_seconds": fake_s,
    }
    print(
        f"top-1 on {n} test images: fake-quant {result['fake_quant_top1']:.2f}% (float64: "
        f"{result['fake_quant_float64_top1']:.2f}%), integer {result['integer_top1']:.2f}%"
    )
    print(
        f"identical predictions: integer vs fake-quant {result['identical_predictions_float32']}/{n}, vs its "
        f"float64 evaluation {result['identical_predictions_float64']}/{n} (float32 vs float64: "
        f"{result['float32_vs_float64_predictions']}/{n})"
    )
    count = args.layer_images or n
    for name, (model, layers) in (("float32", (source.model, source.layers)), ("float64", (exact, exact_layers))):
        c = compare_models(model, layers, im, images[:count], labels[:count], batch_size=25)
        worst = max((a.tie_distance for a in c.layers), default=-1.0)
        mismatched = [f"{a.name} ({a.elements - a.forced_equal})" for a in c.layers if a.forced_equal < a.elements]
        print(
            f"per-layer codes vs {name} fake-quant on {count} images: teacher-forced "
            f"{100 * c.forced_code_agreement:.5f}% equal ({sum(a.elements - a.forced_equal for a in c.layers)} of "
            f"{sum(a.elements for a in c.layers):,} differ, all within {worst:.1e} of a tie"
            f"{'' if not c.unexplained_mismatches else '; NOT ties: ' + ', '.join(c.unexplained_mismatches)}), "
            f"free-running {100 * c.free_code_agreement:.4f}% equal"
        )
        if mismatched:
            print(f"  layers with teacher-forced differences: {', '.join(mismatched)}")
        result[f"layers_vs_{name}"] = c.to_dict()
    print(
        f"packed file: {len(data):,} bytes = header {sizes.header:,} + weights {sizes.weights:,} + integer model "
        f"{sizes.integer_model:,} (int32 biases {sizes.bias:,}, multipliers/shifts {sizes.requant:,})"
    )
    print(
        f"flash: cost model {source.flash_bits:,} bits = {flash_bytes:,} bytes; weights-only file "
        f"{len(weights_only):,} bytes = cost model + header ({len(weights_only) - flash_bytes:+,})"
    )
    print(
        f"requantisations: {im.meta['requants']} ({im.meta['shift_only_requants']} pure shifts); "
        f"bias fractional bits used: {result['bias_shifts']}"
    )
    print(
        f"time on {n} images: integer {int_s:.1f} s ({1000 * int_s / n:.1f} ms/image), fake-quant float32 "
        f"{fake_s:.1f} s; export {export_s:.1f} s"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", help="policy JSON of a search (default: uniform W8A8 and W4A4)")
    parser.add_argument(
        "--uniform", type=int, nargs=2, action="append", metavar=("W_BIT", "A_BIT"), help="uniform policy; repeatable"
    )
    parser.add_argument("--model", default="mobilenetv2", help="registered model with --uniform")
    parser.add_argument("--width-mult", type=float, default=1.0)
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX / onnxruntime part")
    parser.add_argument("--calibration-size", type=int, default=64)
    parser.add_argument(
        "--quantizer",
        choices=family_names(grid=True),
        default="linear",
        help="quantizer family (LSQ families initialised from the calibration, not trained)",
    )
    parser.add_argument("--fold-bn", action="store_true", help="fold BatchNorm into the convs before quantizing")
    parser.add_argument(
        "--log8-every", type=int, default=0, help="give every Nth 8-bit middle layer seed 004's log8 weight quantizer"
    )
    parser.add_argument(
        "--bias-shift",
        type=int,
        default=None,
        help="force the int32 biases' fractional bits (0 = TFLite's accumulator-scale bias)",
    )
    parser.add_argument("--layer-images", type=int, default=0, help="images for the per-layer comparison (0 = all)")
    parser.add_argument(
        "--test-images", type=int, default=0, help="evaluate the first N test images only (0 = the whole split)"
    )
    parser.add_argument(
        "--mixed", type=int, action="append", metavar="SEED", help="random mixed 2..8-bit policy from SEED; repeatable"
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    configure_cpu_runtime()
    if min(args.test_images, args.layer_images) < 0:
        parser.error("--test-images and --layer-images must be non-negative")
    print(f"load average {os.getloadavg()}, {torch.get_num_threads()} torch thread(s)")
    if args.policy:
        results = [report(args, prepare(args, None))]
    else:
        uniforms = [tuple(u) for u in args.uniform] if args.uniform else ([] if args.mixed else [(8, 8), (4, 4)])
        results = [report(args, prepare(args, u)) for u in uniforms]
        results += [report(args, prepare(args, None, seed)) for seed in args.mixed or []]
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
