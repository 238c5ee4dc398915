"""Accuracy of a mixed-precision policy: apply, optionally finetune, evaluate; each policy once.

This is the expensive step of every search episode, so it is built for speed: the
validation images stay in memory in channels-last layout, activation ranges come from
one calibration made at construction (float statistics, as in HAQ, so they do not depend
on the policy), each layer's weights are quantized once per evaluation rather than once
per batch, and identical policies are answered from a cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from haq_gym.evaluation.accuracy import top1_accuracy
from haq_gym.quant import apply_policy, calibrate
from haq_gym.quant.families import reinitialize_learned_steps
from haq_gym.quant.qlayers import QuantLayerMixin
from haq_gym.train_step import TrainStep


@dataclass(frozen=True)
class FinetuneSettings:
    """HAQ's optional short finetune inside each episode (HAQ: one epoch, SGD lr 1e-3, momentum 0.9, wd 4e-5)."""

    steps: int = 0
    lr: float = 1e-3
    batch_size: int = 64
    momentum: float = 0.9
    weight_decay: float = 4e-5
    seed: int = 0


@dataclass(frozen=True)
class EvalResult:
    accuracy: float  # top-1 in percent on the validation images
    eval_time_s: float  # wall time of this evaluation (0 when answered from the cache)
    cached: bool


class PolicyEvaluator:
    """Evaluates ``[[w_bit, a_bit], ...]`` policies on a wrapped model with float weights loaded."""

    def __init__(self, model: nn.Module, layers: Sequence[QuantLayerMixin], val_images: torch.Tensor,
                 val_labels: torch.Tensor, calibration_images: torch.Tensor, *, batch_size: int = 256,
                 finetune: FinetuneSettings = FinetuneSettings(), train_images: torch.Tensor | None = None,
                 train_labels: torch.Tensor | None = None,
                 augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None) -> None:
        if finetune.steps > 0 and (train_images is None or train_labels is None):
            raise ValueError("finetune steps > 0 need train_images and train_labels")
        self.model = model
        self.layers = list(layers)
        self.device = next(model.parameters()).device
        cl = torch.channels_last
        self.val_images = val_images.to(self.device).contiguous(memory_format=cl)
        self.val_labels = val_labels.to(self.device)
        self.batch_size = batch_size
        self.finetune = finetune
        self.train_images = None if train_images is None else train_images.to(self.device).contiguous(memory_format=cl)
        self.train_labels = None if train_labels is None else train_labels.to(self.device)
        self.augment = augment
        self._float_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self._cache: dict[tuple, float] = {}
        self._step: TrainStep | None = None  # built on the first finetune; keeps its CUDA graphs
        model.to(memory_format=cl)
        calibrate(model, self.layers, calibration_images.to(self.device).contiguous(memory_format=cl))

    def float_accuracy(self) -> float:
        """Top-1 (%) of the float model on the validation images (HAQ's reference accuracy)."""
        apply_policy(self.layers, [[-1, -1]] * len(self.layers))
        return top1_accuracy(self.model, self.val_images, self.val_labels, self.batch_size)

    def evaluate(self, policy: Sequence[Sequence[int]]) -> EvalResult:
        key = (tuple(tuple(int(b) for b in p) for p in policy), self.finetune)
        if key in self._cache:
            return EvalResult(self._cache[key], 0.0, True)
        start = time.perf_counter()
        apply_policy(self.layers, policy)
        reinitialize_learned_steps(self.layers)
        if self.finetune.steps > 0:
            self._finetune()
        acc = top1_accuracy(self.model, self.val_images, self.val_labels, self.batch_size)
        if self.finetune.steps > 0:
            self.model.load_state_dict(self._float_state)
        self._cache[key] = acc
        return EvalResult(acc, time.perf_counter() - start, False)

    def _finetune(self) -> None:
        """A few SGD steps with straight-through quantization, from the float weights."""
        s = self.finetune
        gen = torch.Generator().manual_seed(s.seed)
        opt = torch.optim.SGD(self.model.parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
        if self._step is None:
            self._step = TrainStep(self.model, nn.CrossEntropyLoss())
        self.model.train()
        n = len(self.train_images)
        order = torch.randperm(n, generator=gen)
        pos = 0
        for _ in range(s.steps):
            if pos + s.batch_size > n:
                order, pos = torch.randperm(n, generator=gen), 0
            idx = order[pos:pos + s.batch_size].to(self.device)
            pos += s.batch_size
            x = self.train_images[idx]
            if self.augment is not None:
                x = self.augment(x, gen).contiguous(memory_format=torch.channels_last)
            self._step(x, self.train_labels[idx])  # forward and backward (a CUDA graph on a GPU)
            opt.step()
        self.model.eval()
