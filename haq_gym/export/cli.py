"""``python -m haq_gym.export``: write the packed integer model of a quantized model, and run it.

Examples::

    python -m haq_gym.export export --policy runs/<run>/best_policy.json --out model.hqpk
    python -m haq_gym.export export --uniform 4 4 --out w4a4.hqpk
    python -m haq_gym.export export --checkpoint runs/<finetune run>/best.pt --out model.hqpk
    python -m haq_gym.export infer model.hqpk
    python -m haq_gym.export infer model.hqpk --policy runs/<run>/best_policy.json
    python -m haq_gym.export onnx --checkpoint runs/<finetune run>/best.pt      # -> runs/<finetune run>/model.onnx
    python -m haq_gym.export infer runs/<finetune run>/model.onnx               # onnxruntime top-1

``export`` builds the fake-quant model (a policy on the cached float model with HAQ's
calibrated linear quantizers, or a QAT checkpoint as trained), converts it to the integer
model, writes the packed file, prints its size next to the flash cost model, then loads
the file back and compares integer and fake-quant top-1 on the test split. ``infer``
evaluates a packed file on its dataset's test split, and with a model source also the
fake-quant model it came from. ``--device cuda`` runs that fake-quant reference on the GPU
(TF32 off, so it computes in float32 like the CPU); the integer model always runs on the
CPU, in int32, because PyTorch has no integer convolution or matmul on CUDA.

``onnx`` writes the fake-quant model as a standard ONNX model (QuantizeLinear /
DequantizeLinear around each quantized layer), checks it with ``onnx.checker``, runs it
with onnxruntime on the CPU and compares it with the fake-quant model. Without ``--out``
both write next to the checkpoint or policy they read (``model.hqpk`` / ``model.onnx``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from haq_gym.data import DATA_ROOT_HELP, load_dataset, materialize
from haq_gym.export.build import SUPPORTED_ARCHITECTURES, ExportError, architecture_of, export_integer_model
from haq_gym.export.compare import fake_quant_input
from haq_gym.export.integer_model import IntegerModel
from haq_gym.export.packed_file import (
    FileSizes,
    PackedFileError,
    load_integer_model,
    read_packed_file,
    write_packed_file,
)
from haq_gym.export.source import ExportSource, source_from_checkpoint, source_from_policy
from haq_gym.models.registry import model_names
from haq_gym.policy import PolicyFile
from haq_gym.quant.families import family_names
from haq_gym.runtime import configure_cpu_runtime, torch_device
from haq_gym.validation import check_int, check_policy_fits, check_width_mult


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m haq_gym.export",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)
    exp = sub.add_parser("export", help="write the packed integer model of a quantized model")
    _add_source(exp, required=True)
    exp.add_argument(
        "--out", default=None, help="packed file to write (default: model.hqpk next to the --checkpoint or --policy)"
    )
    exp.add_argument("--overwrite", action="store_true", help="replace an existing --out file (refused otherwise)")
    exp.add_argument(
        "--weights-only",
        action="store_true",
        help="write only the header and packed weights (no integer-model section; `infer` needs it)",
    )
    exp.add_argument(
        "--bias-shift",
        type=int,
        default=None,
        help="fractional bits of every int32 bias (0 = at the accumulator scale exactly); "
        "default: as many as int32 leaves room for, up to 16",
    )
    exp.add_argument("--no-eval", action="store_true", help="skip the test-split comparison")
    onx = sub.add_parser("onnx", help="write the fake-quant model as QDQ ONNX and check it in onnxruntime")
    _add_source(onx, required=True)
    onx.add_argument(
        "--out", default=None, help="ONNX file to write (default: model.onnx next to the --checkpoint or --policy)"
    )
    onx.add_argument("--no-eval", action="store_true", help="skip the test-split comparison")
    inf = sub.add_parser("infer", help="evaluate a packed file (.hqpk) or an ONNX file (.onnx) on the test split")
    inf.add_argument("file", help="file written by `export` or `onnx`")
    _add_source(inf, required=False)
    for s in (exp, onx, inf):
        s.add_argument("--batch-size", type=int, default=128)
        s.add_argument(
            "--threads", type=int, default=None, help="torch threads (default: $HAQ_GYM_THREADS or all CPUs)"
        )
        s.add_argument(
            "--device",
            default="cpu",
            help="cpu, cuda, cuda:N or auto: where the fake-quant reference runs (the integer model runs on the CPU)",
        )
    return p


def _add_source(p: argparse.ArgumentParser, required: bool) -> None:
    src = p.add_mutually_exclusive_group(required=required)
    src.add_argument("--policy", help="policy JSON of a search (model, width and dataset come from it)")
    src.add_argument(
        "--uniform",
        type=int,
        nargs=2,
        metavar=("W_BIT", "A_BIT"),
        help="uniform policy (first layer [8, -1], last [8, 8])",
    )
    src.add_argument("--checkpoint", help="QAT checkpoint of `python -m haq_gym.finetune`")
    p.add_argument("--model", default="mobilenetv2", help="model with --uniform")
    p.add_argument("--width-mult", type=float, default=1.0, help="model width with --uniform")
    p.add_argument("--dataset", default="digits", help="dataset with --uniform")
    p.add_argument(
        "--data-root",
        default=None,
        help=DATA_ROOT_HELP,
    )
    p.add_argument(
        "--float-checkpoint",
        default=None,
        help="float model for --policy/--uniform (default: the cached default model)",
    )
    p.add_argument(
        "--calibration-size",
        type=int,
        default=64,
        help="search-train images that calibrate the quantizers and the input step",
    )
    p.add_argument(
        "--quantizer",
        choices=family_names(grid=True),
        default="linear",
        help="quantizer family with --policy/--uniform (LSQ families at their initial steps, untrained)",
    )


SUPPORTED_INTEGER_MODELS = ("mobilenetv2", "mobilenetv3small", "resnet20", "resnet18")
"""Registered model names the integer exporter handles (ONNX export handles every registered model)."""


def _model_name(args: argparse.Namespace) -> str | None:
    """The registered model name the arguments ask for (None when a checkpoint cannot be read: its loader says why)."""
    if args.checkpoint:
        try:
            data = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
            return str(data["meta"]["model"])
        except Exception:  # noqa: BLE001 - unreadable or not a QAT checkpoint: source_from_checkpoint reports it
            return None
    if args.policy:
        return PolicyFile.load(args.policy).model
    model: str | None = args.model
    return model


def refuse_unsupported(args: argparse.Namespace) -> None:
    """Refuse a model the integer exporter cannot handle before anything is built or calibrated."""
    name = _model_name(args)
    if name is not None and name not in SUPPORTED_INTEGER_MODELS:
        raise ExportError(
            f"integer export does not support {name!r}; supported: {', '.join(SUPPORTED_INTEGER_MODELS)} "
            f"({'; '.join(SUPPORTED_ARCHITECTURES)}); `onnx` exports every registered model"
        )


def default_out(args: argparse.Namespace, filename: str) -> str:
    """``--out``, else ``filename`` in the folder of the checkpoint or policy read (the run folder)."""
    if args.out:
        return str(args.out)
    source = args.checkpoint or args.policy
    if source is None:
        raise ValueError(f"--out is needed with --uniform (there is no run folder to write {filename} into)")
    return os.fspath(Path(source).resolve().parent / filename)


def check_export_args(args: argparse.Namespace, out_path: str) -> None:
    """What ``export`` can refuse in a second, before the model and data are set up (which takes 20-30 s)."""
    out = Path(out_path)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"--out {out_path!r} already exists; pass --overwrite to replace it")
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise OSError(f"--out {out_path!r}: folder {os.fspath(folder)!r} does not exist or is not writable")
    check_int("--calibration-size", args.calibration_size, 1)
    check_int("--batch-size", args.batch_size, 1)
    if args.uniform:
        check_int("--uniform W_BIT", args.uniform[0], 2, 8)
        check_int("--uniform A_BIT", args.uniform[1], 2, 8)
    if args.policy or args.uniform:
        check_width_mult(args.width_mult, "--width-mult")
    if args.policy:
        policy = PolicyFile.load(args.policy)
        if policy.model in model_names():  # built-in networks; others are checked once built
            check_policy_fits(policy, policy.model, float(policy.model_kwargs.get("width_mult", 1.0)))


def load_source(args: argparse.Namespace) -> ExportSource | None:
    if args.checkpoint:
        return source_from_checkpoint(args.checkpoint, data_root=args.data_root, calibration_size=args.calibration_size)
    kwargs = {
        "model": args.model,
        "width_mult": args.width_mult,
        "dataset": args.dataset,
        "data_root": args.data_root,
        "float_checkpoint": args.float_checkpoint,
        "calibration_size": args.calibration_size,
        "quantizer": args.quantizer,
        "progress": True,
    }
    if args.policy:
        return source_from_policy(PolicyFile.load(args.policy), **kwargs)
    if args.uniform:
        return source_from_policy(uniform=tuple(args.uniform), **kwargs)
    return None


def required_source(args: argparse.Namespace) -> ExportSource:
    """The source ``export`` and ``onnx`` need (their parsers require one of its flags)."""
    source = load_source(args)
    if source is None:
        raise ValueError("pass --checkpoint, --policy or --uniform")
    return source


def run_onnx(args: argparse.Namespace) -> None:
    """``onnx``: write the QDQ ONNX model, read it back through the checker, run it in onnxruntime, compare."""
    from haq_gym.export.onnx_model import (
        build_onnx_model,
        compare_onnx,
        describe,
        load_onnx,
        onnx_top1,
        open_session,
        write_onnx,
    )

    out = default_out(args, "model.onnx")
    source = required_source(args)
    print(f"ONNX export of {source.description}")
    images, labels = source.test_split()
    proto = build_onnx_model(source.model, source.layers, tuple(images.shape[1:]))
    meta = {
        "dataset": str(source.meta.get("dataset", "")),
        "model": str(source.meta.get("model", "")),
        "bits": str(source.bits),
    }
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    size = write_onnx(out, proto)
    print(f"wrote {out}: {size:,} bytes, {describe(proto)}; onnx.checker passed")
    if args.no_eval:
        return
    session = open_session(load_onnx(out), threads=args.threads)
    top1 = onnx_top1(session, images, labels, args.batch_size, progress=True)
    cmp = compare_onnx(
        source.model, source.layers, images, labels, batch_size=args.batch_size, threads=args.threads, progress=True
    )
    n = cmp.images
    print(
        f"test split ({n} images): onnxruntime top-1 {top1:.2f}%, fake-quant top-1 {cmp.fake_top1:.2f}%, identical "
        f"predictions {cmp.identical_predictions}/{n}, layer-input codes equal {100 * cmp.code_agreement:.4f}% "
        f"(free-running, {len(cmp.layer_codes)} layers), largest logit difference {cmp.max_logit_diff:.2g}"
    )
    recorded = source.meta.get("test_top1")
    if recorded is not None:
        print(
            f"accuracy: finetune's test top-1 {float(recorded):.2f}% (best.pt, chosen on validation); the ONNX model "
            f"keeps its float input, {top1:.2f}% ({top1 - float(recorded):+.2f} points)"
        )


def infer_onnx(args: argparse.Namespace) -> None:
    """``infer model.onnx``: onnxruntime top-1 on the test split of the dataset recorded in the file."""
    from haq_gym.export.onnx_model import load_onnx, onnx_top1, open_session

    proto = load_onnx(args.file)
    meta = {p.key: p.value for p in proto.metadata_props}
    session = open_session(proto, threads=args.threads)
    images, labels = materialize(load_dataset(meta.get("dataset") or args.dataset, args.data_root).test)
    start = time.perf_counter()
    top1 = onnx_top1(session, images, labels, args.batch_size, progress=True)
    seconds = time.perf_counter() - start
    print(
        f"{args.file}: onnxruntime top-1 {top1:.2f}% on {len(images)} test images "
        f"({1000 * seconds / len(images):.2f} ms/image on the CPU)"
    )


def print_sizes(sizes: FileSizes, flash_bits: int) -> None:
    flash_bytes = (flash_bits + 7) // 8
    print(
        f"  file {sizes.total:,} bytes = header {sizes.header:,} + packed weights {sizes.weights:,}"
        + (
            f" + integer model {sizes.integer_model:,} (int32 biases {sizes.bias:,}, "
            f"multipliers and shifts {sizes.requant:,})"
            if sizes.integer_model
            else ""
        )
    )
    print(
        f"  flash cost model: {flash_bits:,} bits = {flash_bytes:,} bytes; header + packed weights = "
        f"{sizes.flash:,} bytes, {sizes.flash - flash_bytes:+,} bytes from the cost model "
        f"(the header is {sizes.header:,})"
    )


def evaluate(
    integer_model: IntegerModel,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    source: ExportSource | None,
    device: torch.device = torch.device("cpu"),
) -> dict[str, Any]:
    """Integer top-1 (and fake-quant top-1 and agreement with a source) on ``images``; prints a summary.

    The integer model runs on the CPU; the source's fake-quant model on ``device``.
    """
    start = time.perf_counter()
    preds = [
        integer_model.predict(images[i : i + batch_size], batch_size)[1]
        for i in tqdm(range(0, len(images), batch_size), desc="integer model", unit="batch", leave=False)
    ]
    pred = torch.cat(preds)
    seconds = time.perf_counter() - start
    n = len(images)
    result = {"images": n, "integer_top1": 100.0 * float((pred == labels).sum()) / n, "integer_seconds": seconds}
    line = f"test split ({n} images): integer top-1 {result['integer_top1']:.2f}%"
    if source is not None:
        source.model.to(device)
        with torch.no_grad():
            batches = range(0, n, batch_size)
            fake = torch.cat(
                [
                    source.model(fake_quant_input(integer_model, images[i : i + batch_size]).to(device))
                    .argmax(dim=1)
                    .cpu()
                    for i in tqdm(batches, desc="fake-quant", leave=False)
                ]
            )
            float_in = torch.cat(
                [
                    source.model(images[i : i + batch_size].to(device)).argmax(dim=1).cpu()
                    for i in tqdm(batches, desc="fake-quant, float input", leave=False)
                ]
            )
        source.model.cpu()
        result["fake_quant_top1"] = 100.0 * float((fake == labels).sum()) / n
        result["fake_quant_float_input_top1"] = 100.0 * float((float_in == labels).sum()) / n
        result["identical_predictions"] = int((fake == pred).sum())
        line += (
            f", fake-quant top-1 {result['fake_quant_top1']:.2f}% (on {device}), identical predictions "
            f"{result['identical_predictions']}/{n}"
        )
    print(line)
    if source is not None:
        print(accuracy_line(source, result))
    print(
        f"integer inference on the CPU: {seconds:.1f} s ({1000 * seconds / n:.1f} ms/image, integer-only ops checked)"
    )
    return result


def accuracy_line(source: ExportSource, result: dict[str, Any]) -> str:
    """One line: the accuracy the model had before export, and what the export changed and by how much.

    The only change is the 8-bit input quantization (the fake-quant model and the
    finetune read float images); its effect is measured on the same images.
    """
    float_in, int_top1 = result["fake_quant_float_input_top1"], result["integer_top1"]
    recorded = source.meta.get("test_top1")
    before = (
        f"finetune's test top-1 {float(recorded):.2f}% (best.pt, epoch {source.meta.get('epoch', '?')}, chosen "
        f"on validation), here {float_in:.2f}%"
        if recorded is not None
        else f"fake-quant test top-1 with float input {float_in:.2f}%"
    )
    return (
        f"accuracy: {before}; the integer model quantizes the input image to 8 bits, the one change: "
        f"{int_top1:.2f}% ({int_top1 - float_in:+.2f} points)"
    )


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
            refuse_unsupported(args)
            out = default_out(args, "model.hqpk")
            check_export_args(args, out)
            source = required_source(args)
            architecture_of(source.model)
            print(f"exporting {source.description}")
            model = export_integer_model(
                source.model,
                source.layers,
                source.calibration_images,
                bias_shift=args.bias_shift,
                meta=source.meta,
                progress=True,
            )
            sizes = write_packed_file(out, model, include_integer_model=not args.weights_only, overwrite=args.overwrite)
            print(
                f"wrote {out}: {len(model.layers)} layers, {model.meta['requants']} requantisations "
                f"({model.meta['shift_only_requants']} pure shifts)"
            )
            print_sizes(sizes, source.flash_bits)
            if not args.no_eval and not args.weights_only:
                images, labels = source.test_split()
                evaluate(load_integer_model(out), images, labels, args.batch_size, source, device)
        elif args.command == "onnx":
            run_onnx(args)
        elif args.file.endswith(".onnx"):
            infer_onnx(args)
        else:
            integer_model = load_integer_model(args.file)
            given = load_source(args)
            sizes = read_packed_file(args.file).sizes
            print(
                f"{args.file}: {len(integer_model.layers)} layers, {sizes.total:,} bytes "
                f"(header {sizes.header:,}, packed weights {sizes.weights:,})"
            )
            if given is not None:
                bundle = given.bundle
            else:
                meta = integer_model.meta
                bundle = load_dataset(meta.get("dataset", "digits"), args.data_root)
            images, labels = materialize(bundle.test)
            evaluate(integer_model, images, labels, args.batch_size, given, device)
    except (ExportError, PackedFileError, FileNotFoundError, FileExistsError, ValueError, RuntimeError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
