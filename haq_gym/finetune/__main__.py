"""``python -m haq_gym.finetune``: LSQ finetune of a searched policy, uniform QAT, or float training.

Examples::

    python -m haq_gym.finetune --policy runs/haq-ddpg_HAQ-MobileNetV2-v0_seed0/best_policy.json --seed 0
    python -m haq_gym.finetune --w-bits 4 --a-bits 4 --model mobilenetv2 --dataset digits --seed 0
    python -m haq_gym.finetune --float --model mobilenetv2 --dataset digits --epochs 30 --lr 0.1 --seed 0
    python -m haq_gym.finetune --resume runs/finetune_mobilenetv2_digits_policy_seed0

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

from haq_gym.data import DatasetNotFoundError, load_dataset
from haq_gym.finetune.checkpoint import load_qat_checkpoint, quantize_model, read_qat_file
from haq_gym.finetune.recipe import QATRecipe
from haq_gym.finetune.trainer import TrainingDiverged, train_quantized
from haq_gym.models import build_model, ensure_default_checkpoint, load_checkpoint
from haq_gym.models.registry import default_recipe
from haq_gym.plots import plot_finetune_curves
from haq_gym.policy import PolicyFile, now_iso, uniform_bits
from haq_gym.quant import apply_policy, wrap_model
from haq_gym.quant.families import QUANTIZER_FAMILIES
from haq_gym.runs import prepare_run_folder
from haq_gym.runtime import configure_cpu_runtime, torch_device

LSQ_FAMILIES = tuple(f for f in QUANTIZER_FAMILIES if f != "linear")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m haq_gym.finetune", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--policy", help="policy JSON written by a search (model and dataset come from it)")
    what.add_argument("--w-bits", type=int, help="uniform weight bits (with --a-bits)")
    what.add_argument("--float", action="store_true", help="train the float model (no quantization)")
    what.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted finetune from RUN_DIR/last.pt")
    p.add_argument("--a-bits", type=int, help="uniform activation bits (with --w-bits)")
    p.add_argument("--model", default="mobilenetv2", help="model name (ignored with --policy)")
    p.add_argument("--width-mult", type=float, default=1.0, help="model width (ignored with --policy)")
    p.add_argument("--dataset", default="digits", help="dataset name (ignored with --policy)")
    p.add_argument("--data-root", default=None, help="dataset folder (CIFAR, ImageFolder, Fashion-MNIST/MNIST idx files; fashion-mnist defaults to the Debian package folder)")
    p.add_argument("--quantizer", choices=LSQ_FAMILIES, default="lsq",
                   help="lsq, lsq+ (learned activation offset) or pot (power-of-two steps)")
    p.add_argument("--init-checkpoint", default=None,
                   help="float checkpoint, or QAT checkpoint at some precision, to start from "
                        "(default: the cached default float model, trained on first use)")
    defaults = QATRecipe()
    p.add_argument("--epochs", type=int, default=defaults.epochs)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--lr", type=float, default=None, help=f"peak learning rate (default {defaults.lr}; 0.1 with --float)")
    p.add_argument("--momentum", type=float, default=defaults.momentum)
    p.add_argument("--weight-decay", type=float, default=defaults.weight_decay,
                   help="decay of layers at >=4 bits; 3-bit layers get half, 2-bit a quarter (LSQ)")
    p.add_argument("--output", default=None, help="run folder (must be new; default runs/finetune_...)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def resolve_config(args: argparse.Namespace) -> dict[str, Any]:
    """Plain settings of a new run (saved as config.yml, read back by --resume)."""
    if (args.w_bits is None) != (args.a_bits is None):
        raise ValueError("--w-bits and --a-bits go together")
    lr = args.lr if args.lr is not None else (0.1 if args.float else QATRecipe().lr)
    recipe = QATRecipe(epochs=args.epochs, batch_size=args.batch_size, lr=lr, momentum=args.momentum,
                       weight_decay=args.weight_decay)
    config: dict[str, Any] = {"model": args.model, "width_mult": args.width_mult, "dataset": args.dataset,
                              "data_root": args.data_root, "quantizer": "linear" if args.float else args.quantizer,
                              "init_checkpoint": args.init_checkpoint, "seed": args.seed, "recipe": recipe.to_dict()}
    if args.policy is not None:
        policy = PolicyFile.load(args.policy)
        config.update(model=policy.model, dataset=policy.dataset,
                      width_mult=float(policy.model_kwargs.get("width_mult", 1.0)), policy=policy.to_dict(),
                      mode="policy", policy_source=os.fspath(args.policy))
    elif args.float:
        config.update(mode="float")
    else:
        config.update(mode="uniform", w_bits=args.w_bits, a_bits=args.a_bits)
    return config


def make_policy(config: dict[str, Any], layer_names: list[str]) -> PolicyFile:
    """The policy a config describes, for a model with ``layer_names``."""
    if config["mode"] == "policy":
        return PolicyFile.from_dict(config["policy"], source=config.get("policy_source", "policy"))
    n = len(layer_names)
    if config["mode"] == "float":
        bits = [[-1, -1]] * n
    else:
        w, a = int(config["w_bits"]), int(config["a_bits"])
        for name, b in (("--w-bits", w), ("--a-bits", a)):
            if not 2 <= b <= 8:
                raise ValueError(f"{name} must be in 2..8, got {b}")
        bits = uniform_bits(n, w, a)
    return PolicyFile(model=config["model"], dataset=config["dataset"], layer_names=list(layer_names),
                      bits=[list(b) for b in bits], model_kwargs={"width_mult": config["width_mult"]},
                      found_by={"method": config["mode"], "created": now_iso()})


def build_model_for(config: dict[str, Any], bundle, progress: bool, device: torch.device | str = "cpu"):
    """Model with starting weights, quantizers and the policy applied; returns (model, named layers, policy, meta)."""
    family, init = config["quantizer"], config["init_checkpoint"]
    if init is not None and _is_qat_file(init):
        ckpt = load_qat_checkpoint(init)
        if (ckpt.meta.get("model"), float(ckpt.meta.get("width_mult", 0))) != (config["model"], config["width_mult"]):
            raise ValueError(f"--init-checkpoint {init!r} holds {ckpt.meta.get('model')} width "
                             f"{ckpt.meta.get('width_mult')}, but this run trains {config['model']} width {config['width_mult']}")
        if ckpt.family != family:
            raise ValueError(f"--init-checkpoint {init!r} was trained with {ckpt.family} quantizers; "
                             f"pass --quantizer {ckpt.family}")
        model, named = ckpt.model, ckpt.layers
        policy = make_policy(config, [n for n, _ in named])
        policy.check_layers([n for n, _ in named], min_bit=2, max_bit=8)
        apply_policy([m for _, m in named], policy.bits)  # learned steps are rescaled to keep their clip range
        return model, named, policy, {"init_checkpoint": init, "init_float_top1": ckpt.meta.get("test_top1")}, False
    model = build_model(config["model"], num_classes=bundle.num_classes, width_mult=config["width_mult"])
    if init is None:
        path, float_meta = ensure_default_checkpoint(config["model"], config["width_mult"], config["dataset"], model,
                                                     bundle, recipe=default_recipe(config["model"], config["dataset"]),
                                                     progress=progress, min_accuracy=None, device=device)
        init = os.fspath(path)
    else:
        float_meta = load_checkpoint(init, model)
    policy = make_policy(config, [n for n, _ in wrap_model(model)])
    named = quantize_model(model, policy, family)
    return model, named, policy, {"init_checkpoint": init, "init_float_top1": float_meta.get("test_top1")}, True


def _is_qat_file(path: str) -> bool:
    try:
        read_qat_file(path)
    except ValueError as err:
        if "not a haq-gym QAT checkpoint" in str(err):
            return False
        raise
    return True


def run(args: argparse.Namespace) -> int:
    progress = not args.no_progress
    if args.resume is not None:
        run_dir = Path(args.resume)
        config_path = run_dir / "config.yml"
        if not (run_dir / "last.pt").exists() or not config_path.exists():
            raise FileNotFoundError(f"{os.fspath(run_dir)!r} has no last.pt and config.yml to resume from")
        config = yaml.safe_load(config_path.read_text())
    else:
        config = resolve_config(args)
    torch.manual_seed(config["seed"])
    bundle = load_dataset(config["dataset"], config["data_root"])
    device = torch_device(args.device)
    model, named, policy, init_meta, calibrate_first = build_model_for(config, bundle, progress, device)
    if args.resume is None:
        tag = config["mode"] if config["mode"] != "uniform" else f"w{config['w_bits']}a{config['a_bits']}"
        run_dir = prepare_run_folder(args.output, f"finetune_{config['model']}_{config['dataset']}_{tag}_seed{config['seed']}")
        tmp = run_dir / ".config.yml.tmp"
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))
        os.replace(tmp, run_dir / "config.yml")
        policy.save(run_dir / "policy.json")
    meta = {"model": config["model"], "width_mult": config["width_mult"], "num_classes": bundle.num_classes,
            "dataset": config["dataset"], "seed": config["seed"], "recipe": config["recipe"], **init_meta}
    recipe = QATRecipe(**config["recipe"])
    print(f"run folder: {run_dir}")
    start_top1 = init_meta["init_float_top1"]
    recorded = "not recorded in the checkpoint" if start_top1 is None else f"{float(start_top1):.2f}%"
    print(f"start: {init_meta['init_checkpoint']} (test top-1 {recorded}, as recorded when it was saved)")
    result = train_quantized(model, [m for _, m in named], bundle, policy, config["quantizer"], recipe, run_dir, meta,
                             seed=config["seed"], device=device, resume=args.resume is not None,
                             progress=progress, calibrate_first=calibrate_first)
    best = (f"best validation top-1 {result.best_val_top1:.2f}% at epoch {result.best_epoch} "
            f"(test {result.best_test_top1:.2f}%), checkpoint {run_dir / 'best.pt'}")
    if result.epochs_run == 0:
        print(f"this run had already finished its {recipe.epochs} epochs; nothing left to train; {best}")
    else:
        print(f"last epoch: validation top-1 {result.last_val_top1:.2f}%, test top-1 {result.last_top1:.2f}%; {best}")
    if (run_dir / "metrics.csv").exists():
        plot_finetune_curves(run_dir / "metrics.csv", run_dir / "training_curves.png",
                             title=f"{config['quantizer']} finetune of {config['model']} on {config['dataset']}, "
                                   f"seed {config['seed']}")
        print(f"figure: {run_dir / 'training_curves.png'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_cpu_runtime()
    try:
        return run(args)
    except (ValueError, FileNotFoundError, FileExistsError, DatasetNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except TrainingDiverged as err:
        print(f"error: training diverged: {err}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
