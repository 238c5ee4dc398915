"""Accuracy of a mixed-precision policy: apply, optionally finetune, evaluate; each policy once.

This is the expensive step of every search episode, so it is built for speed: the
validation images stay in memory in channels-last layout, activation ranges come from
one calibration made at construction (float statistics, as in HAQ, so they do not depend
on the policy), each layer's weights are quantized once per evaluation rather than once
per batch, and identical policies are answered from a cache.

HAQ's own measurement is available piece by piece (:class:`AccuracySettings`):
calibration on a fresh, augmented train batch before every evaluation
(``calibration="per_episode"``; the cache is then off, since two evaluations of one policy
see different batches), the accuracy taken as the running train-mode top-1 of the
finetune (``source="finetune_running"``, against the float model's top-1 on the
augmented train images), and top-5 instead of top-1 (``top5``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from haq_gym.evaluation.accuracy import correct_topk, top1_accuracy
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


ACCURACY_SOURCES = ("val", "finetune_running")
CALIBRATIONS = ("once", "per_episode")


@dataclass(frozen=True)
class AccuracySettings:
    """How the accuracy behind the reward is measured.

    ``source="val"`` (haq-gym): eval-mode accuracy on the held-out search-val images after
    the optional finetune; the reference is the float model on the same images.
    ``source="finetune_running"`` (HAQ with its per-episode finetune on): the running
    train-mode accuracy over the finetune's batches; the reference is the float model in
    eval mode on the train images with train augmentation (HAQ's ``org_acc``).
    ``top5``: top-5 instead of top-1 (HAQ's ``use_top5``). ``calibration``: ``"once"``
    (one fixed batch at construction) or ``"per_episode"`` (HAQ: a fresh augmented train
    batch of the same size before every evaluation).
    """

    source: str = "val"
    top5: bool = False
    calibration: str = "once"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.source not in ACCURACY_SOURCES:
            raise ValueError(f"unknown accuracy source {self.source!r}; expected one of {', '.join(ACCURACY_SOURCES)}")
        if self.calibration not in CALIBRATIONS:
            raise ValueError(f"unknown calibration {self.calibration!r}; expected one of {', '.join(CALIBRATIONS)}")

    @property
    def k(self) -> int:
        return 5 if self.top5 else 1


@dataclass(frozen=True)
class EvalResult:
    accuracy: float  # top-1 (top-5 with AccuracySettings.top5) in percent, measured as AccuracySettings says
    eval_time_s: float  # wall time of this evaluation (0 when answered from the cache)
    cached: bool


class PolicyEvaluator:
    """Evaluates ``[[w_bit, a_bit], ...]`` policies on a wrapped model with float weights loaded."""

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[QuantLayerMixin],
        val_images: torch.Tensor,
        val_labels: torch.Tensor,
        calibration_images: torch.Tensor,
        *,
        batch_size: int = 256,
        finetune: FinetuneSettings = FinetuneSettings(),
        train_images: torch.Tensor | None = None,
        train_labels: torch.Tensor | None = None,
        augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
        accuracy: AccuracySettings = AccuracySettings(),
    ) -> None:
        needs_train = (
            finetune.steps > 0 or accuracy.source == "finetune_running" or accuracy.calibration == "per_episode"
        )
        if needs_train and (train_images is None or train_labels is None):
            raise ValueError(
                "a per-episode finetune, per-episode calibration or the finetune's running accuracy "
                "need train_images and train_labels"
            )
        if accuracy.source == "finetune_running" and finetune.steps < 1:
            raise ValueError(
                "the finetune's running accuracy (HAQ's reward) needs a per-episode finetune of at least one step"
            )
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
        self.accuracy = accuracy
        self.calibration_size = len(calibration_images)
        self._calibration_gen = torch.Generator().manual_seed(accuracy.seed)
        self._float_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self._cache: dict[tuple[tuple[tuple[int, ...], ...], FinetuneSettings], float] = {}
        self._step: TrainStep | None = None  # built on the first finetune; keeps its CUDA graphs
        model.to(memory_format=cl)  # type: ignore[call-overload]  # torch's Module.to overloads omit memory_format
        calibrate(model, self.layers, calibration_images.to(self.device).contiguous(memory_format=cl))

    def float_accuracy(self) -> float:
        """The float model's accuracy (%), the reward's reference, measured as :class:`AccuracySettings` says.

        ``source="val"``: on the validation images. ``"finetune_running"``: HAQ's ``org_acc``,
        eval mode on the train images with one seeded pass of train augmentation.
        """
        apply_policy(self.layers, [[-1, -1]] * len(self.layers))
        k = self.accuracy.k
        if self.accuracy.source == "val":
            return top1_accuracy(self.model, self.val_images, self.val_labels, self.batch_size, k=k)
        images, labels = self._train_set()
        if self.augment is not None:
            gen = torch.Generator().manual_seed(self.accuracy.seed)
            images = self.augment(images, gen).contiguous(memory_format=torch.channels_last)
        return top1_accuracy(self.model, images, labels, self.batch_size, k=k)

    def _train_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The train images and labels (the constructor refuses every setting that needs them without them)."""
        if self.train_images is None or self.train_labels is None:
            raise RuntimeError("this evaluator was built without train images")
        return self.train_images, self.train_labels

    def remember(self, policy: Sequence[Sequence[int]], accuracy: float) -> float:
        """Answer ``policy`` from the cache from now on with a recorded ``accuracy`` (a resumed run's history).

        Records round the accuracy (``episodes.csv`` keeps 4 decimals); it is snapped to the
        nearest count of correct validation images, ``100 * k / n``, which is exactly what
        :meth:`evaluate` measured (4 decimals of a percentage tell ``k`` apart for ``n``
        below 10^6). Returns the snapped accuracy.
        """
        n = len(self.val_labels)
        exact = 100.0 * round(accuracy * n / 100.0) / n
        self._cache[(tuple(tuple(int(b) for b in p) for p in policy), self.finetune)] = exact
        return exact

    def evaluate(self, policy: Sequence[Sequence[int]]) -> EvalResult:
        key = (tuple(tuple(int(b) for b in p) for p in policy), self.finetune)
        use_cache = self.accuracy.calibration == "once"
        if use_cache and key in self._cache:
            return EvalResult(self._cache[key], 0.0, True)
        start = time.perf_counter()
        apply_policy(self.layers, policy)
        if self.accuracy.calibration == "per_episode":
            self._calibrate_fresh_batch()
        reinitialize_learned_steps(self.layers)
        running = self._finetune() if self.finetune.steps > 0 else None
        if self.accuracy.source == "finetune_running":
            assert running is not None  # the constructor refuses this source without a finetune
            acc = running
        else:
            acc = top1_accuracy(self.model, self.val_images, self.val_labels, self.batch_size, k=self.accuracy.k)
        if self.finetune.steps > 0:
            self.model.load_state_dict(self._float_state)
        if use_cache:
            self._cache[key] = acc
        return EvalResult(acc, time.perf_counter() - start, False)

    def _calibrate_fresh_batch(self) -> None:
        """HAQ's per-episode calibration: a new random, augmented batch of train images."""
        images, _ = self._train_set()
        n = len(images)
        idx = torch.randperm(n, generator=self._calibration_gen)[: self.calibration_size].to(self.device)
        x = images[idx]
        if self.augment is not None:
            x = self.augment(x, self._calibration_gen)
        calibrate(self.model, self.layers, x.contiguous(memory_format=torch.channels_last))

    def _finetune(self) -> float:
        """A few SGD steps with straight-through quantization, from the float weights.

        Returns the running train-mode accuracy (%) over the batches seen (HAQ's reward
        accuracy when its per-episode finetune is on).
        """
        s = self.finetune
        gen = torch.Generator().manual_seed(s.seed)
        opt = torch.optim.SGD(self.model.parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
        if self._step is None:
            self._step = TrainStep(self.model, nn.CrossEntropyLoss())
        self.model.train()
        images, labels = self._train_set()
        n = len(images)
        order = torch.randperm(n, generator=gen)
        pos = 0
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        seen = 0
        for _ in range(s.steps):
            if pos + s.batch_size > n:
                order, pos = torch.randperm(n, generator=gen), 0
            idx = order[pos : pos + s.batch_size].to(self.device)
            pos += s.batch_size
            x = images[idx]
            if self.augment is not None:
                x = self.augment(x, gen).contiguous(memory_format=torch.channels_last)
            y = labels[idx]
            _, logits = self._step(x, y)  # forward and backward (a CUDA graph on a GPU)
            opt.step()
            correct += correct_topk(logits.detach(), y, self.accuracy.k)
            seen += len(y)
        self.model.eval()
        return 100.0 * int(correct) / max(seen, 1)
