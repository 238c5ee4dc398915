"""Top-1 (or top-k) accuracy on tensors held in memory."""

from __future__ import annotations

import torch
from torch import nn


def correct_topk(logits: torch.Tensor, labels: torch.Tensor, k: int = 1) -> torch.Tensor:
    """Number of rows whose label is among the ``k`` largest logits (a 0-d tensor; ``k`` capped at the class count)."""
    if k == 1:
        return (logits.argmax(dim=1) == labels).sum()
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices
    return (top == labels[:, None]).any(dim=1).sum()


def top1_accuracy(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256, k: int = 1
) -> float:
    """Top-1 accuracy (top-``k`` with ``k``) in percent, in eval mode, without autograd.

    ``images`` should already be on the model's device and in its memory format; the
    batches are views, so nothing is copied.
    """
    if len(images) == 0:
        raise ValueError("cannot measure accuracy on an empty set")
    was_training = model.training
    model.eval()
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            logits = model(images[start : start + batch_size])
            correct += int(correct_topk(logits, labels[start : start + batch_size], k))
    model.train(was_training)
    return 100.0 * correct / len(images)
