"""Float training of a model on a :class:`~haq_gym.data.DataBundle` (the search's starting point)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from haq_gym.data import DataBundle, materialize
from haq_gym.evaluation.accuracy import top1_accuracy
from haq_gym.train_step import TrainStep


@dataclass(frozen=True)
class FloatRecipe:
    """SGD with Nesterov momentum and a one-cycle schedule; enough for the embedded default data."""

    epochs: int = 10
    batch_size: int = 64
    max_lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 4e-5

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def train_float(
    model: nn.Module,
    bundle: DataBundle,
    recipe: FloatRecipe,
    seed: int,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> float:
    """Train ``model`` on ``bundle.train``; returns top-1 (%) on ``bundle.test``.

    Deterministic on CPU for a given seed: batch order and augmentation come from a
    seeded ``torch.Generator``, initial weights are whatever the caller built (seed it).
    """
    device = torch.device(device)
    images, labels = materialize(bundle.train)
    images, labels = images.to(device), labels.to(device)
    model.to(device=device, memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's overloads omit memory_format
    gen = torch.Generator().manual_seed(seed)
    steps_per_epoch = (len(images) + recipe.batch_size - 1) // recipe.batch_size
    opt = torch.optim.SGD(
        model.parameters(), lr=recipe.max_lr, momentum=recipe.momentum, nesterov=True, weight_decay=recipe.weight_decay
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, recipe.max_lr, total_steps=recipe.epochs * steps_per_epoch)
    step = TrainStep(model, nn.CrossEntropyLoss())  # a CUDA graph per step on a GPU, plain on the CPU
    bar = tqdm(total=recipe.epochs * steps_per_epoch, desc="float pretraining", unit="step", disable=not progress)
    model.train()
    for _ in range(recipe.epochs):
        order = torch.randperm(len(images), generator=gen).to(device)
        for start in range(0, len(images), recipe.batch_size):
            idx = order[start : start + recipe.batch_size]
            x = bundle.augment(images[idx], gen).contiguous(memory_format=torch.channels_last)
            loss, _ = step(x, labels[idx])
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    test_x, test_y = materialize(bundle.test)
    return top1_accuracy(model, test_x.to(device).contiguous(memory_format=torch.channels_last), test_y.to(device))
