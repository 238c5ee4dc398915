"""An in-memory image dataset that returns normalised float tensors."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset


class ImageTensorDataset(Dataset[tuple[torch.Tensor, int]]):
    """Images held as one tensor; items are ``(normalised float32 [C,H,W], int label)``.

    Keeping the raw images (uint8 or float) and normalising per item gives exactly what
    ``ToTensor() + Normalize(mean, std)`` would, without PIL round trips or holding a
    float copy of a large split.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        mean: Sequence[float],
        std: Sequence[float],
        scale: float,
    ) -> None:
        """``images``: [N,C,H,W]; ``labels``: [N]; a pixel ``p`` maps to ``(p/scale - mean)/std``."""
        if images.ndim != 4 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"expected images [N,C,H,W] and labels [N], got {tuple(images.shape)} and {tuple(labels.shape)}"
            )
        if len(mean) != images.shape[1] or len(std) != images.shape[1]:
            raise ValueError(f"mean/std need {images.shape[1]} entries, got {len(mean)} and {len(std)}")
        self.images = images
        self.labels = labels.to(torch.int64)
        self.scale = float(scale)
        self._mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index].to(torch.float32) / self.scale
        return (image - self._mean) / self._std, int(self.labels[index])
