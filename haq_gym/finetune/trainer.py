"""Quantization-aware training (or float training) of a wrapped model, resumable epoch by epoch.

The run folder holds ``config.yml`` (what was asked), ``metrics.csv`` (one row per
epoch), ``tensorboard/``, ``last.pt`` (everything needed to resume: weights, steps,
optimizer, schedule, RNG) and ``best.pt`` (the epoch with the best validation top-1 so
far, with the policy embedded). Validation is the search-val split, held out of the
training images; the test split is reported every epoch but never used to choose. Both
checkpoints are replaced atomically and only after a finite epoch, so a crash or a NaN loss
never leaves a broken or diverged checkpoint behind.
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from haq_gym.data import DataBundle, materialize
from haq_gym.evaluation.accuracy import top1_accuracy
from haq_gym.finetune.checkpoint import load_fitting_state, read_qat_file, save_qat_checkpoint
from haq_gym.finetune.kmeans_schedule import KMeansFinetuneSchedule
from haq_gym.finetune.recipe import QATRecipe, parameter_groups
from haq_gym.policy import PolicyFile
from haq_gym.quant import calibrate
from haq_gym.quant.qlayers import QuantLayerMixin
from haq_gym.train_step import TrainStep
from haq_gym.util import write_atomic

METRIC_FIELDS = ("epoch", "train_loss", "train_top1", "val_top1", "test_top1", "lr", "epoch_time_s")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class TrainResult:
    """Accuracies in percent; "best" is the epoch with the highest validation top-1 (``best.pt``)."""

    best_val_top1: float
    best_epoch: int
    best_test_top1: float
    last_val_top1: float
    last_top1: float
    epochs_run: int


def train_quantized(
    model: nn.Module,
    layers: Sequence[QuantLayerMixin],
    bundle: DataBundle,
    policy: PolicyFile,
    family: str,
    recipe: QATRecipe,
    run_dir: str | os.PathLike[str],
    meta: dict[str, Any],
    seed: int,
    device: str | torch.device = "cpu",
    resume: bool = False,
    progress: bool = True,
    calibrate_first: bool = True,
    train_step: str | None = None,
    schedule: KMeansFinetuneSchedule | None = None,
) -> TrainResult:
    """Train ``model`` (already wrapped, with ``family`` quantizers and the policy's bits) on ``bundle.train``.

    Evaluates on ``bundle.search_val`` (held out of the training images; chooses
    ``best.pt``) and on ``bundle.test`` (reported only) after every epoch. With ``resume`` the state in
    ``run_dir/last.pt`` is restored and training continues with the next epoch; the
    result is the same as an uninterrupted run (same seed, CPU). ``calibrate_first``
    initialises the learned steps from a fixed batch (LSQ's data-driven init); pass
    ``False`` when the model's steps were loaded from a QAT checkpoint. A bundle with
    ``train_augmented`` (image folders) is streamed from disk by DataLoader workers, training
    and evaluation alike; the others are held in memory and augmented per batch. ``train_step``
    picks how each step's forward and backward run (:mod:`haq_gym.train_step`: ``auto``,
    ``graph``, ``graph-compile``, ``compile`` or ``plain``; default ``$HAQ_GYM_TRAIN_STEP``, else ``auto``).
    ``schedule``: HAQ's k-means finetune
    (:class:`~haq_gym.finetune.kmeans_schedule.KMeansFinetuneSchedule`): set up before every
    epoch, a shared-weight update after every step, and ``best.pt`` only from epochs where
    every layer is quantized.
    """
    run_dir = Path(run_dir)
    device = torch.device(device)
    cl = torch.channels_last
    streamed = bundle.train_augmented
    val_eval: Callable[[nn.Module], float]
    test_eval: Callable[[nn.Module], float]
    if streamed is not None:  # an image folder: batches read from disk and augmented per image by DataLoader workers
        with torch.random.fork_rng(devices=[]):
            calib_x = materialize(
                Subset(bundle.train, range(min(recipe.calibration_size, len(cast(Sized, bundle.train))))),
                num_workers=bundle.num_workers,
            )[0]
        n_train = len(cast(Sized, streamed))
        val_eval = _StreamedSplit(bundle.search_val, bundle.num_workers, device, cl)
        test_eval = _StreamedSplit(bundle.test, bundle.num_workers, device, cl)
    else:
        images, labels = materialize(bundle.train)
        test_x, test_y = materialize(bundle.test)
        images, labels = images.to(device), labels.to(device)
        test_x, test_y = test_x.to(device).contiguous(memory_format=cl), test_y.to(device)
        with torch.random.fork_rng(devices=[]):  # a DataLoader draws a seed: keep dropout's draws as without it
            val_x, val_y = materialize(bundle.search_val)
        val_x, val_y = val_x.to(device).contiguous(memory_format=cl), val_y.to(device)
        calib_x, n_train = images[: recipe.calibration_size], len(images)
        val_eval = lambda m: top1_accuracy(m, val_x, val_y)  # noqa: E731
        test_eval = lambda m: top1_accuracy(m, test_x, test_y)  # noqa: E731
    model.to(device=device, memory_format=cl)  # type: ignore[call-overload]  # torch's overloads omit memory_format

    gen = torch.Generator().manual_seed(seed)

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of shuffled, augmented training batches, drawn from ``gen``."""
        if streamed is not None:
            loader = DataLoader(
                streamed,
                batch_size=recipe.batch_size,
                shuffle=True,
                generator=gen,
                num_workers=bundle.num_workers,
                pin_memory=device.type == "cuda",
            )
            for x, y in loader:
                yield x.to(device, non_blocking=True).contiguous(memory_format=cl), y.to(device, non_blocking=True)
            return
        order = torch.randperm(n_train, generator=gen).to(device)
        for start in range(0, n_train, recipe.batch_size):
            idx = order[start : start + recipe.batch_size]
            yield bundle.augment(images[idx], gen).contiguous(memory_format=cl), labels[idx]

    if calibrate_first and not resume:
        calibrate(model, layers, calib_x.to(device).contiguous(memory_format=cl))
        with torch.no_grad():  # weight steps are initialised from the weights on first use
            model.eval()
            model(calib_x[:2].to(device).contiguous(memory_format=cl))
    steps_per_epoch = math.ceil(n_train / recipe.batch_size)
    opt = torch.optim.SGD(parameter_groups(model, layers, recipe.weight_decay), lr=recipe.lr, momentum=recipe.momentum)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=recipe.epochs * steps_per_epoch)
    start_epoch, best_val, best_test, best_epoch = 1, -1.0, float("nan"), 0
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    if resume:
        data = read_qat_file(last_path)
        load_fitting_state(model, data["state_dict"], last_path)
        training = data["training"]
        opt.load_state_dict(training["optimizer"])
        sched.load_state_dict(training["scheduler"])
        gen.set_state(training["generator"])
        torch.set_rng_state(training["torch_rng"])  # dropout draws from the global generator
        if device.type == "cuda" and training.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(training["cuda_rng"], device)
        start_epoch = int(training["epoch"]) + 1
        best_val, best_epoch = float(training["best_val_top1"]), int(training["best_epoch"])
        best_test = float(training["best_test_top1"])
        _truncate_metrics(run_dir / "metrics.csv", start_epoch - 1)
    loss_fn = nn.CrossEntropyLoss()
    forward_backward = TrainStep(model, loss_fn, mode=train_step)
    writer = SummaryWriter(os.fspath(run_dir / "tensorboard"), purge_step=start_epoch)
    last_top1 = last_val = float("nan")
    total = (recipe.epochs - start_epoch + 1) * steps_per_epoch
    bar = tqdm(
        total=max(total, 0),
        desc="QAT" if any(layer.w_bit != -1 for layer in layers) else "float training",
        unit="step",
        disable=not progress or total <= 0,
    )
    try:
        for epoch in range(start_epoch, recipe.epochs + 1):
            t0 = time.perf_counter()
            if schedule is not None:
                schedule.before_epoch(epoch)
            model.train()
            loss_sum, seen = 0.0, 0
            correct = torch.zeros((), dtype=torch.int64, device=device)  # read once per epoch: no sync per step
            for step, (x, y) in enumerate(batches()):
                loss, logits = forward_backward(x, y)  # the optimiser has not stepped yet
                loss_value = loss.item()  # the step's one device sync: the NaN check and the progress bar
                if not math.isfinite(loss_value):
                    kept = (
                        f"the last good checkpoint is {os.fspath(last_path)!r}"
                        if last_path.exists()
                        else "no checkpoint was written yet"
                    )
                    raise TrainingDiverged(
                        f"loss became {loss_value} at epoch {epoch}, step {step}; "
                        f"{kept}; lower --lr and resume or restart"
                    )
                opt.step()
                if schedule is not None:
                    schedule.after_step()
                sched.step()
                loss_sum += loss_value * len(y)
                correct += (logits.argmax(1) == y).sum()
                seen += len(y)
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{loss_value:.3f}")
            correct_images = int(correct)
            broken = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
            if broken:  # e.g. a BatchNorm running variance overflowed while the loss stayed finite
                kept = (
                    f"the last good checkpoint is {os.fspath(last_path)!r}"
                    if last_path.exists()
                    else "no checkpoint was written yet"
                )
                raise TrainingDiverged(
                    f"non-finite values in {broken[0]} after epoch {epoch}; {kept}; lower --lr and resume or restart"
                )
            last_val = val_eval(model)
            last_top1 = test_eval(model)
            row = {
                "epoch": epoch,
                "train_loss": loss_sum / seen,
                "train_top1": 100.0 * correct_images / seen,
                "val_top1": last_val,
                "test_top1": last_top1,
                "lr": sched.get_last_lr()[0],
                "epoch_time_s": time.perf_counter() - t0,
            }
            _append_metrics(run_dir / "metrics.csv", row)
            for key in ("train_loss", "train_top1", "val_top1", "test_top1", "lr"):
                writer.add_scalar(f"finetune/{key}", row[key], epoch)
            writer.flush()
            epoch_meta = dict(meta, epoch=epoch, val_top1=last_val, test_top1=last_top1)
            if last_val > best_val and (schedule is None or schedule.fully_quantized(epoch)):
                best_val, best_test, best_epoch = last_val, last_top1, epoch
                best_policy = PolicyFile(
                    **{
                        **policy.__dict__,
                        "accuracy": dict(policy.accuracy, finetune_val_top1=last_val, finetune_test_top1=last_top1),
                    }
                )
                save_qat_checkpoint(best_path, model, best_policy, family, epoch_meta)
            training = {
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "generator": gen.get_state(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                "epoch": epoch,
                "best_val_top1": best_val,
                "best_test_top1": best_test,
                "best_epoch": best_epoch,
            }
            save_qat_checkpoint(last_path, model, policy, family, epoch_meta, training)
            bar.write(
                f"epoch {epoch}/{recipe.epochs}: loss {row['train_loss']:.4f}, val top-1 {last_val:.2f}%, "
                f"test top-1 {last_top1:.2f}% (best val {best_val:.2f}% at epoch {best_epoch})"
            )
    finally:
        bar.close()
        writer.close()
    return TrainResult(best_val, best_epoch, best_test, last_val, last_top1, recipe.epochs - start_epoch + 1)


class _StreamedSplit:
    """Top-1 on a split read from disk batch by batch (an image folder too large to hold in memory)."""

    def __init__(
        self,
        dataset: Dataset[Any],
        num_workers: int,
        device: torch.device,
        memory_format: torch.memory_format,
        batch_size: int = 256,
    ) -> None:
        self.dataset, self.num_workers, self.device = dataset, num_workers, device
        self.memory_format, self.batch_size = memory_format, batch_size

    def __call__(self, model: nn.Module) -> float:
        loader = DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
        )
        was_training = model.training
        model.eval()
        correct = seen = 0
        with torch.random.fork_rng(devices=[]), torch.inference_mode():
            for x, y in loader:
                logits = model(x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format))
                correct += int((logits.argmax(1) == y.to(self.device)).sum())
                seen += len(y)
        model.train(was_training)
        if seen == 0:
            raise ValueError("cannot measure accuracy on an empty set")
        return 100.0 * correct / seen


def _truncate_metrics(path: Path, last_epoch: int) -> None:
    """Drop rows after ``last_epoch`` (written by a run that crashed before saving that epoch's checkpoint)."""
    if not path.exists():
        return
    with open(path, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if int(r["epoch"]) <= last_epoch]
    text = io.StringIO()
    w = csv.DictWriter(text, fieldnames=METRIC_FIELDS)
    w.writeheader()
    w.writerows(rows)
    write_atomic(path, text.getvalue())


def _append_metrics(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=METRIC_FIELDS)
        if new:
            w.writeheader()
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        fh.flush()
        os.fsync(fh.fileno())
