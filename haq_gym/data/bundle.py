"""The dataset bundle handed to the rest of haq-gym, and a helper to hold a split in memory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from haq_gym.data.augment import random_translate_flip


@dataclass(frozen=True)
class DataBundle:
    """All splits of one dataset plus what is needed to normalise and augment it.

    Every item of every split is ``(float32 [3,H,W] normalised with mean/std, int label)``;
    training augmentation is applied per batch by :meth:`augment`.

    - ``train``: the training pool minus ``search_val`` (float pretraining, finetuning).
    - ``search_train``: the first ``train_size`` images of ``train`` (calibration and
      per-episode finetuning: HAQ's "train subset").
    - ``search_val``: images held out of the training pool, never in ``train``; the
      search reward is measured here (HAQ's "val subset").
    - ``test``: the dataset's test split, only for final reporting.

    ``hflip`` says whether a horizontal flip keeps labels valid (not for digits);
    ``pad`` is the largest random translation, in pixels, used by :meth:`augment`.
    ``train_augmented``, where set (image folders), is ``train`` with a per-image random
    training transform; the finetune then streams it from disk with ``num_workers``
    DataLoader workers instead of holding ``train`` in memory.
    """

    name: str
    num_classes: int
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    train: Dataset[Any]
    search_train: Dataset[Any]
    search_val: Dataset[Any]
    test: Dataset[Any]
    hflip: bool
    pad: int = 4
    train_augmented: Dataset[Any] | None = None
    num_workers: int = 0

    def augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Randomly translate a normalised batch [N,3,H,W] by up to ``pad`` pixels and flip it when ``hflip``.

        Uncovered pixels are filled with a black pixel's normalised value (as
        ``RandomCrop(padding=pad)`` on raw images would). Deterministic given the
        generator; returns a new tensor of the same shape, dtype, device and memory format.
        """
        black = tuple(-m / s for m, s in zip(self.mean, self.std, strict=True))
        return random_translate_flip(x, generator, pad=self.pad, hflip=self.hflip, fill=black)


def materialize(
    dataset: Dataset[Any], batch_size: int = 512, num_workers: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack a dataset into ``(images float32 [N,3,H,W], labels int64 [N])``, in dataset order.

    Used to keep small evaluation sets in memory so repeated evaluations skip the loader;
    ``num_workers`` DataLoader workers decode images in parallel (image folders).
    """
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    images: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    for batch_images, batch_labels in loader:
        images.append(batch_images.to(torch.float32))
        labels.append(torch.as_tensor(batch_labels, dtype=torch.int64))
    if not images:
        raise ValueError("cannot materialize an empty dataset")
    return torch.cat(images), torch.cat(labels)
