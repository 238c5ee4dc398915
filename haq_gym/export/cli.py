"""``python -m haq_gym.export``: write the packed integer model of a quantized model, and run it.

Examples::

    python -m haq_gym.export export --policy runs/<run>/best_policy.json --out model.hqpk
    python -m haq_gym.export export --uniform 4 4 --out w4a4.hqpk
    python -m haq_gym.export export --checkpoint runs/<finetune run>/best.pt --out model.hqpk
    python -m haq_gym.export infer model.hqpk
    python -m haq_gym.export infer model.hqpk --policy runs/<run>/best_policy.json

``export`` builds the fake-quant model (a policy on the cached float model with HAQ's
calibrated linear quantizers, or a QAT checkpoint as trained), converts it to the integer
model, writes the packed file, prints its size next to the flash cost model, then loads
the file back and compares integer and fake-quant top-1 on the test split. ``infer``
evaluates a packed file on its dataset's test split, and with a model source also the
fake-quant model it came from. ``--device cuda`` runs that fake-quant reference on the GPU
(TF32 off, so it computes in float32 like the CPU); the integer model always runs on the
CPU, in int32, because PyTorch has no integer convolution or matmul on CUDA.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from haq_gym.data import load_dataset, materialize
from haq_gym.export.build import ExportError, export_integer_model
from haq_gym.export.compare import fake_quant_input
from haq_gym.export.integer_model import IntegerModel
from haq_gym.export.packed_file import FileSizes, PackedFileError, load_integer_model, read_packed_file, write_packed_file
from haq_gym.export.source import ExportSource, source_from_checkpoint, source_from_policy
from haq_gym.policy import PolicyFile
from haq_gym.quant.families import family_names
from haq_gym.runtime import configure_cpu_runtime, torch_device


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m haq_gym.export", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    exp = sub.add_parser("export", help="write the packed integer model of a quantized model")
    _add_source(exp, required=True)
    exp.add_argument("--out", required=True, help="packed file to write")
    exp.add_argument("--weights-only", action="store_true",
                     help="write only the header and packed weights (no integer-model section; `infer` needs it)")
    exp.add_argument("--bias-shift", type=int, default=None,
                     help="fractional bits of every int32 bias (0 = at the accumulator scale exactly); "
                          "default: as many as int32 leaves room for, up to 16")
    exp.add_argument("--no-eval", action="store_true", help="skip the test-split comparison")
    inf = sub.add_parser("infer", help="evaluate a packed file on the test split")
    inf.add_argument("file", help="packed file written by `export`")
    _add_source(inf, required=False)
    for s in (exp, inf):
        s.add_argument("--batch-size", type=int, default=128)
        s.add_argument("--threads", type=int, default=None, help="torch threads (default: $HAQ_GYM_THREADS or all CPUs)")
        s.add_argument("--device", default="cpu",
                       help="cpu, cuda, cuda:N or auto: where the fake-quant reference runs (the integer model "
                            "runs on the CPU)")
    return p


def _add_source(p: argparse.ArgumentParser, required: bool) -> None:
    src = p.add_mutually_exclusive_group(required=required)
    src.add_argument("--policy", help="policy JSON of a search (model, width and dataset come from it)")
    src.add_argument("--uniform", type=int, nargs=2, metavar=("W_BIT", "A_BIT"),
                     help="uniform policy (first layer [8, -1], last [8, 8])")
    src.add_argument("--checkpoint", help="QAT checkpoint of `python -m haq_gym.finetune`")
    p.add_argument("--model", default="mobilenetv2", help="model with --uniform")
    p.add_argument("--width-mult", type=float, default=1.0, help="model width with --uniform")
    p.add_argument("--dataset", default="digits", help="dataset with --uniform")
    p.add_argument("--data-root", default=None, help="dataset folder (CIFAR, ImageFolder, Fashion-MNIST/MNIST idx files; fashion-mnist defaults to the Debian package folder)")
    p.add_argument("--float-checkpoint", default=None,
                   help="float model for --policy/--uniform (default: the cached default model)")
    p.add_argument("--calibration-size", type=int, default=64,
                   help="search-train images that calibrate the quantizers and the input step")
    p.add_argument("--quantizer", choices=family_names(), default="linear",
                   help="quantizer family with --policy/--uniform (LSQ families at their initial steps, untrained)")


def load_source(args: argparse.Namespace) -> ExportSource | None:
    if args.checkpoint:
        return source_from_checkpoint(args.checkpoint, data_root=args.data_root, calibration_size=args.calibration_size)
    kwargs = dict(model=args.model, width_mult=args.width_mult, dataset=args.dataset, data_root=args.data_root,
                  float_checkpoint=args.float_checkpoint, calibration_size=args.calibration_size,
                  quantizer=args.quantizer, progress=True)
    if args.policy:
        return source_from_policy(PolicyFile.load(args.policy), **kwargs)
    if args.uniform:
        return source_from_policy(uniform=tuple(args.uniform), **kwargs)
    return None


def print_sizes(sizes: FileSizes, flash_bits: int) -> None:
    flash_bytes = (flash_bits + 7) // 8
    print(f"  file {sizes.total:,} bytes = header {sizes.header:,} + packed weights {sizes.weights:,}"
          + (f" + integer model {sizes.integer_model:,} (int32 biases {sizes.bias:,}, "
             f"multipliers and shifts {sizes.requant:,})" if sizes.integer_model else ""))
    print(f"  flash cost model: {flash_bits:,} bits = {flash_bytes:,} bytes; header + packed weights = "
          f"{sizes.flash:,} bytes, {sizes.flash - flash_bytes:+,} bytes from the cost model "
          f"(the header is {sizes.header:,})")


def evaluate(integer_model: IntegerModel, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
             source: ExportSource | None, device: torch.device = torch.device("cpu")) -> dict:
    """Integer top-1 (and fake-quant top-1 and agreement with a source) on ``images``; prints a summary.

    The integer model runs on the CPU; the source's fake-quant model on ``device``.
    """
    start = time.perf_counter()
    _, pred = integer_model.predict(images, batch_size)
    seconds = time.perf_counter() - start
    n = len(images)
    result = {"images": n, "integer_top1": 100.0 * float((pred == labels).sum()) / n, "integer_seconds": seconds}
    line = f"test split ({n} images): integer top-1 {result['integer_top1']:.2f}%"
    if source is not None:
        source.model.to(device)
        with torch.no_grad():
            fake = torch.cat([source.model(fake_quant_input(integer_model, images[i:i + batch_size]).to(device))
                              .argmax(dim=1).cpu() for i in range(0, n, batch_size)])
        source.model.cpu()
        result["fake_quant_top1"] = 100.0 * float((fake == labels).sum()) / n
        result["identical_predictions"] = int((fake == pred).sum())
        line += (f", fake-quant top-1 {result['fake_quant_top1']:.2f}% (on {device}), identical predictions "
                 f"{result['identical_predictions']}/{n}")
    print(line)
    print(f"integer inference on the CPU: {seconds:.1f} s ({1000 * seconds / n:.1f} ms/image, integer-only ops checked)")
    return result


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_cpu_runtime(args.threads)
    try:
        device = torch_device(args.device)
        if device.type == "cuda":
            if not torch.cuda.is_available():
                raise RuntimeError(f"--device {args.device}: this torch build sees no CUDA device")
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        if args.command == "export":
            source = load_source(args)
            print(f"exporting {source.description}")
            model = export_integer_model(source.model, source.layers, source.calibration_images,
                                         bias_shift=args.bias_shift, meta=source.meta)
            sizes = write_packed_file(args.out, model, include_integer_model=not args.weights_only)
            print(f"wrote {args.out}: {len(model.layers)} layers, {model.meta['requants']} requantisations "
                  f"({model.meta['shift_only_requants']} pure shifts)")
            print_sizes(sizes, source.flash_bits)
            if not args.no_eval and not args.weights_only:
                images, labels = source.test_split()
                evaluate(load_integer_model(args.out), images, labels, args.batch_size, source, device)
        else:
            integer_model = load_integer_model(args.file)
            source = load_source(args)
            sizes = read_packed_file(args.file).sizes
            print(f"{args.file}: {len(integer_model.layers)} layers, {sizes.total:,} bytes "
                  f"(header {sizes.header:,}, packed weights {sizes.weights:,})")
            if source is not None:
                bundle = source.bundle
            else:
                meta = integer_model.meta
                bundle = load_dataset(meta.get("dataset", "digits"), args.data_root)
            images, labels = materialize(bundle.test)
            evaluate(integer_model, images, labels, args.batch_size, source, device)
    except (ExportError, PackedFileError, FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
