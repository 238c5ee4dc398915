"""The finetune command (``python -m haq_gym.finetune``) as library functions: LSQ (or HAQ linear) finetune of
a searched policy, uniform QAT, or float training. Benchmarks call :func:`build_parser` and :func:`run` from here.

Examples::

    python -m haq_gym.finetune --policy runs/haq-ddpg_HAQ-MobileNetV2-v0_seed0/best_policy.json --seed 0
    python -m haq_gym.finetune --w-bits 4 --a-bits 4 --model mobilenetv2 --dataset digits --seed 0
    python -m haq_gym.finetune --float --model mobilenetv2 --dataset digits --epochs 30 --lr 0.1 --seed 0
    python -m haq_gym.finetune --resume runs/finetune_mobilenetv2_digits_policy_seed0

``--quantizer haq`` trains with HAQ's own linear quantizer (HAQ's ``finetune.py
--linear_quantization``; HAQ's recipe was SGD lr 0.01, cosine, 30 epochs, batch 256).

All three train through the same loop: a uniform precision is a policy whose layers are
all equal (first layer ``[8, -1]`` and last ``[8, 8]`` as in the search), float training
is a policy with quantization off.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from haq_gym.data import DATA_ROOT_HELP, DataBundle, DatasetNotFoundError, load_dataset
from haq_gym.finetune.checkpoint import min_weight_bit, read_qat_file
from haq_gym.finetune.kmeans_schedule import KMeansFinetuneSchedule
from haq_gym.finetune.recipe import QATRecipe
from haq_gym.finetune.trainer import TrainingDiverged, TrainResult, train_quantized
from haq_gym.models.registry import model_names
from haq_gym.models.spec import ModelSpec
from haq_gym.plots import plot_finetune_curves
from haq_gym.policy import PolicyFile, now_iso, uniform_bits
from haq_gym.quant import apply_policy
from haq_gym.quant.families import family_names
from haq_gym.quant.qlayers import QuantLayerMixin
from haq_gym.quantized_model import QuantizedModel, check_policy
from haq_gym.runs import prepare_run_folder
from haq_gym.runs.run_config import yaml_problem
from haq_gym.runs.run_folder import release_unused
from haq_gym.runtime import configure_cpu_runtime, torch_device
from haq_gym.train_step import TRAIN_STEP_MODES, requested_mode
from haq_gym.util import write_atomic
from haq_gym.validation import ENV_KEYWORD_CHECKS, check_policy_fits, check_seed, check_width_mult

TRAINABLE_FAMILIES = family_names(learned=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m haq_gym.finetune",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--policy",
        help="policy JSON written by a search (model and dataset come from it), or a HAQ "
        "strategy list [[8,-1],[6,6],...,[8,8]] (inline or a file holding it; "
        "--model/--dataset say what it is for)",
    )
    what.add_argument("--w-bits", type=int, help="uniform weight bits (with --a-bits)")
    what.add_argument("--float", action="store_true", help="train the float model (no quantization)")
    what.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted finetune from RUN_DIR/last.pt")
    p.add_argument("--a-bits", type=int, help="uniform activation bits (with --w-bits)")
    p.add_argument(
        "--model",
        default="mobilenetv2",
        help="built-in name, torchvision:<name> or package.module:builder (ignored with a policy JSON)",
    )
    p.add_argument(
        "--model-kwargs",
        default=None,
        metavar="YAML",
        help='keywords of a torchvision or import-path model, e.g. "{width_mult: 0.5}"',
    )
    p.add_argument("--weights", default=None, help="torchvision weights to start from, e.g. DEFAULT")
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="input size of an imagefolder dataset (default 224; fixed for the others)",
    )
    p.add_argument("--width-mult", type=float, default=1.0, help="model width (ignored with --policy)")
    p.add_argument("--dataset", default="digits", help="dataset name (ignored with --policy)")
    p.add_argument(
        "--data-root",
        default=None,
        help=DATA_ROOT_HELP,
    )
    p.add_argument(
        "--quantizer",
        choices=TRAINABLE_FAMILIES,
        default="lsq",
        help="lsq, lsq+ (learned activation offset), pot (power-of-two steps), haq (HAQ's own linear "
        "quantizer, its finetune.py --linear_quantization path: KL-J/max clip calibrated on the first "
        "batch, trainable activation range) or kmeans (HAQ's k-means weight sharing, for policies of "
        "the HAQ-KMeans-* envs; shared-weight update after every step)",
    )
    p.add_argument(
        "--free-high-bit",
        action="store_true",
        help="with --quantizer kmeans: layers above 6 bits train as float until the last epoch, where "
        "every layer is re-clustered from the finetuned weights (HAQ's --free_high_bit, on in its "
        "scripts)",
    )
    p.add_argument(
        "--init-checkpoint",
        default=None,
        help="float checkpoint, or QAT checkpoint at some precision, to start from "
        "(default: the cached default float model, trained on first use)",
    )
    defaults = QATRecipe()
    p.add_argument("--epochs", type=int, help=f"default {defaults.epochs} (not with --resume: the run keeps its own)")
    p.add_argument("--batch-size", type=int, help=f"default {defaults.batch_size}")
    p.add_argument(
        "--lr", type=float, default=None, help=f"peak learning rate (default {defaults.lr}; 0.1 with --float)"
    )
    p.add_argument("--momentum", type=float, help=f"default {defaults.momentum}")
    p.add_argument(
        "--weight-decay",
        type=float,
        help=f"decay of layers at >=4 bits (default {defaults.weight_decay}); 3-bit layers get half, "
        "2-bit a quarter (LSQ)",
    )
    p.add_argument("--output", default=None, help="run folder (must be new; default runs/finetune_...)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument(
        "--train-step",
        default=None,
        metavar="{" + ",".join(TRAIN_STEP_MODES) + "}",
        help="how each training step runs (haq_gym.train_step): auto (CUDA graph on a GPU, eager on the CPU), "
        "graph, graph-compile, compile or plain; default $HAQ_GYM_TRAIN_STEP, else auto",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def resolve_config(args: argparse.Namespace) -> dict[str, Any]:
    """Plain settings of a new run (saved as config.yml, read back by --resume)."""
    if (args.w_bits is None) != (args.a_bits is None):
        raise ValueError("--w-bits and --a-bits go together")
    lr = args.lr if args.lr is not None else (0.1 if args.float else QATRecipe().lr)
    given = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "momentum": args.momentum,
        "weight_decay": args.weight_decay,
    }
    recipe = QATRecipe(lr=lr, **{key: value for key, value in given.items() if value is not None})
    if args.free_high_bit and args.quantizer != "kmeans":
        raise ValueError("--free-high-bit goes with --quantizer kmeans")
    config: dict[str, Any] = {
        "model": args.model,
        "width_mult": args.width_mult,
        "dataset": args.dataset,
        "data_root": args.data_root,
        "quantizer": "linear" if args.float else args.quantizer,
        "init_checkpoint": args.init_checkpoint,
        "seed": args.seed,
        "recipe": recipe.to_dict(),
        "free_high_bit": bool(args.free_high_bit),
    }
    model_kwargs = _parse_mapping(args.model_kwargs, "--model-kwargs")
    config.update(model_kwargs=model_kwargs, weights=args.weights, image_size=args.image_size)
    if args.policy is not None:
        loaded = read_policy_argument(args.policy)
        if isinstance(loaded, PolicyFile):
            spec = ModelSpec.from_policy_kwargs(loaded.model, loaded.model_kwargs)
            config.update(
                model=loaded.model,
                dataset=loaded.dataset,
                width_mult=spec.width_mult,
                model_kwargs=dict(spec.kwargs),
                weights=spec.weights,
                image_size=loaded.model_kwargs.get("image_size", args.image_size),
                policy=loaded.to_dict(),
                mode="policy",
                policy_source=os.fspath(args.policy),
            )
        else:
            config.update(mode="strategy", strategy=loaded, policy_source=os.fspath(args.policy))
    elif args.float:
        config.update(mode="float")
    else:
        config.update(mode="uniform", w_bits=args.w_bits, a_bits=args.a_bits)
    return config


# Flags of a new run's recipe; --resume continues with the recipe in the run's config.yml.
RECIPE_FLAGS = ("epochs", "batch_size", "lr", "momentum", "weight_decay")


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse bad flags in one line before any data, model or run folder is touched.

    ``--resume`` keeps the run's own recipe (its learning-rate schedule spans its epochs,
    so a changed ``--epochs`` would not continue the same run): recipe flags are refused.
    """
    try:
        ENV_KEYWORD_CHECKS["device"](args.device)
    except ValueError as err:
        raise ValueError(f"--device: {err}") from None
    check_seed(args.seed)
    requested_mode(args.train_step, "--train-step")  # the flag, or $HAQ_GYM_TRAIN_STEP when it is not given
    for flag, bits in (("--w-bits", args.w_bits), ("--a-bits", args.a_bits)):
        if bits is not None and not 2 <= bits <= 8:
            raise ValueError(f"{flag} must be in 2..8, got {bits}")
    if args.resume is not None:
        given = [f"--{flag.replace('_', '-')}" for flag in RECIPE_FLAGS if getattr(args, flag) is not None]
        if given:
            raise ValueError(f"--resume continues the run with the recipe in its config.yml; drop {', '.join(given)}")
    else:
        check_width_mult(args.width_mult, "--width-mult")


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """The ``config.yml`` of a finetune run folder to resume, refused in one line if it is not a YAML mapping."""
    path = run_dir / "config.yml"
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"{os.fspath(path)!r} is not valid YAML ({yaml_problem(err)}); it cannot be resumed") from None
    missing = [
        key
        for key in ("mode", "model", "dataset", "seed", "recipe", "quantizer")
        if not isinstance(config, dict) or key not in config
    ]
    if missing:
        raise ValueError(
            f"{os.fspath(path)!r} is not a finetune run config (missing {', '.join(missing)}); it cannot be resumed"
        )
    checked: dict[str, Any] = config
    return checked


def check_policy_before_training(config: dict[str, Any], num_classes: int) -> None:
    """A policy file for a built-in network must fit its layers before any float model is trained or cached."""
    if config["mode"] != "policy" or config["model"] not in model_names():
        return  # strategies and other models are checked once built (building them is cheap or loads weights)
    policy = PolicyFile.from_dict(config["policy"], source=config.get("policy_source", "policy"))
    # Layers and num_classes here; the bit range is the quantizer family's, checked once the model is built.
    check_policy_fits(policy, config["model"], float(config["width_mult"]), num_classes, min_bit=1)


def model_spec(config: dict[str, Any]) -> ModelSpec:
    """The float network a run config names (older configs have no model_kwargs or weights)."""
    return ModelSpec(
        config["model"],
        width_mult=float(config["width_mult"]),
        kwargs=config.get("model_kwargs") or {},
        weights=config.get("weights"),
    )


def read_policy_argument(value: str) -> PolicyFile | list[list[int]]:
    """``--policy``: a policy JSON file, or a HAQ strategy list given inline or in a file."""
    text = value
    if not value.lstrip().startswith("["):
        path = Path(value)
        if not path.is_file():
            raise FileNotFoundError(
                f"--policy {value!r}: no such file (expected a policy JSON or a HAQ strategy "
                "list such as [[8,-1],[6,6],...,[8,8]])"
            )
        text = path.read_text()
        if not text.lstrip().startswith("["):
            return PolicyFile.load(path)
    try:
        strategy = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"--policy {value!r} is not a valid strategy list: {err}") from None
    if not isinstance(strategy, list) or not all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(b, int) and not isinstance(b, bool) for b in p)
        for p in strategy
    ):
        raise ValueError(
            f"--policy: a HAQ strategy is a list of [w_bit, a_bit] integer pairs, "
            f"e.g. [[8,-1],[6,6],...,[8,8]]; got {str(strategy)[:80]}"
        )
    return strategy


def _parse_mapping(text: str | None, flag: str) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"{flag} is not valid YAML: {err}") from None
    if not isinstance(value, dict):
        raise ValueError(f'{flag} expects a mapping such as "{{width_mult: 0.5}}", got {text!r}')
    return value


def make_policy(config: dict[str, Any], layer_names: list[str], num_classes: int) -> PolicyFile:
    """The policy a config describes, for a model with ``layer_names``."""
    if config["mode"] == "policy":
        return PolicyFile.from_dict(config["policy"], source=config.get("policy_source", "policy"))
    n = len(layer_names)
    if config["mode"] == "strategy":
        bits = check_policy(config["strategy"], layer_names, 2, 8)
    elif config["mode"] == "float":
        bits = [[-1, -1]] * n
    else:
        w, a = int(config["w_bits"]), int(config["a_bits"])
        for name, b in (("--w-bits", w), ("--a-bits", a)):
            if not 2 <= b <= 8:
                raise ValueError(f"{name} must be in 2..8, got {b}")
        bits = uniform_bits(n, w, a)
    return PolicyFile(
        model=config["model"],
        dataset=config["dataset"],
        layer_names=list(layer_names),
        bits=[list(b) for b in bits],
        model_kwargs=model_spec(config).to_policy_kwargs(num_classes),
        found_by={"method": config["mode"], "created": now_iso()},
    )


def build_model_for(
    config: dict[str, Any], bundle: DataBundle, progress: bool, device: torch.device | str = "cpu"
) -> tuple[nn.Module, list[tuple[str, QuantLayerMixin]], PolicyFile, dict[str, Any], bool]:
    """Model with starting weights, quantizers and the policy applied; returns (model, named layers, policy, meta).

    Built with :class:`~haq_gym.quantized_model.QuantizedModel`, the builder the search and
    the export use: from a QAT checkpoint (its learned steps kept) or from float weights.
    """
    family, init = config["quantizer"], config["init_checkpoint"]
    spec = model_spec(config)
    if init is not None and _is_qat_file(init):
        qm = QuantizedModel.from_checkpoint(init)
        if (qm.spec.name, qm.spec.width_mult) != (spec.name, spec.width_mult):
            raise ValueError(
                f"--init-checkpoint {init!r} holds {qm.spec.name} width {qm.spec.width_mult:g}, "
                f"but this run trains {spec.name} width {spec.width_mult:g}"
            )
        if qm.family != family:
            raise ValueError(
                f"--init-checkpoint {init!r} was trained with {qm.family} quantizers; pass --quantizer {qm.family}"
            )
        policy = make_policy(config, qm.layer_names, bundle.num_classes)
        apply_policy(
            qm.modules, check_policy(policy, qm.layer_names, min_weight_bit(family), 8)
        )  # learned steps keep their clip range
        return (
            qm.model,
            qm.layers,
            policy,
            {"init_checkpoint": init, "init_float_top1": qm.meta.get("test_top1")},
            False,
        )
    qm = QuantizedModel.from_float(
        spec,
        bundle.num_classes,
        bundle.image_size,
        checkpoint=init,
        dataset=config["dataset"],
        bundle=bundle,
        family=family,
        progress=progress,
        min_accuracy=None,
        device=device,
    )
    policy = make_policy(config, qm.layer_names, bundle.num_classes)
    apply_policy(qm.modules, check_policy(policy, qm.layer_names, min_weight_bit(family), 8))
    return (
        qm.model,
        qm.layers,
        policy,
        {"init_checkpoint": qm.checkpoint, "init_float_top1": qm.meta.get("test_top1")},
        True,
    )


def _is_qat_file(path: str) -> bool:
    try:
        read_qat_file(path)
    except ValueError as err:
        if "not a haq-gym QAT checkpoint" in str(err):
            return False
        raise
    return True


def run(args: argparse.Namespace) -> int:
    run_finetune(args)
    return 0


def run_finetune(args: argparse.Namespace) -> tuple[Path, TrainResult]:
    """Run (or resume) the finetune an argument namespace of :func:`build_parser` describes; returns the run folder
    and the training result (the library's :func:`haq_gym.api.finetune_policy` calls this too)."""
    progress = not args.no_progress
    check_arguments(args)
    if args.resume is not None:
        run_dir = Path(args.resume)
        if not (run_dir / "last.pt").exists() or not (run_dir / "config.yml").exists():
            raise FileNotFoundError(f"{os.fspath(run_dir)!r} has no last.pt and config.yml to resume from")
        config = read_run_config(run_dir)
    else:
        config = resolve_config(args)
        tag = config["mode"] if config["mode"] != "uniform" else f"w{config['w_bits']}a{config['a_bits']}"
        run_dir = prepare_run_folder(
            args.output, f"finetune_{config['model'].replace(':', '-')}_{config['dataset']}_{tag}_seed{config['seed']}"
        )
    try:
        torch.manual_seed(config["seed"])
        bundle = load_dataset(config["dataset"], config["data_root"], image_size=config.get("image_size"))
        check_policy_before_training(config, bundle.num_classes)
        device = torch_device(args.device)
        model, named, policy, init_meta, calibrate_first = build_model_for(config, bundle, progress, device)
    except BaseException:
        if args.resume is None:
            release_unused(run_dir)  # claimed before the model work; a refused run leaves no folder
        raise
    if args.resume is None:
        write_atomic(run_dir / "config.yml", yaml.safe_dump(config, sort_keys=False))
        policy.save(run_dir / "policy.json")
    meta = {
        **model_spec(config).to_policy_kwargs(bundle.num_classes),
        "model": config["model"],
        "image_size": bundle.image_size if config["dataset"] == "imagefolder" else None,
        "dataset": config["dataset"],
        "seed": config["seed"],
        "recipe": config["recipe"],
        **init_meta,
    }
    recipe = QATRecipe(**config["recipe"])
    print(f"run folder: {run_dir}")
    start_top1 = init_meta["init_float_top1"]
    recorded = "not recorded in the checkpoint" if start_top1 is None else f"{float(start_top1):.2f}%"
    print(f"start: {init_meta['init_checkpoint']} (test top-1 {recorded}, as recorded when it was saved)")
    layers = [m for _, m in named]
    schedule = None
    if config["quantizer"] == "kmeans":
        schedule = KMeansFinetuneSchedule(
            layers, [w for w, _ in policy.bits], recipe.epochs, free_high_bit=bool(config.get("free_high_bit", False))
        )
    result = train_quantized(
        model,
        layers,
        bundle,
        policy,
        config["quantizer"],
        recipe,
        run_dir,
        meta,
        seed=config["seed"],
        device=device,
        resume=args.resume is not None,
        progress=progress,
        calibrate_first=calibrate_first,
        train_step=args.train_step,
        schedule=schedule,
    )
    best = (
        f"best validation top-1 {result.best_val_top1:.2f}% at epoch {result.best_epoch} "
        f"(test {result.best_test_top1:.2f}%), checkpoint {run_dir / 'best.pt'}"
    )
    if result.epochs_run == 0:
        print(f"this run had already finished its {recipe.epochs} epochs; nothing left to train; {best}")
    else:
        print(f"last epoch: validation top-1 {result.last_val_top1:.2f}%, test top-1 {result.last_top1:.2f}%; {best}")
    if (run_dir / "metrics.csv").exists():
        plot_finetune_curves(
            run_dir / "metrics.csv",
            run_dir / "training_curves.png",
            title=f"{config['quantizer']} finetune of {config['model']} on {config['dataset']}, seed {config['seed']}",
        )
        print(f"figure: {run_dir / 'training_curves.png'}")
    return run_dir, result


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_cpu_runtime()
    try:
        return run(args)
    except (ValueError, OSError, DatasetNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except TrainingDiverged as err:
        print(f"error: training diverged: {err}", file=sys.stderr)
        return 3
