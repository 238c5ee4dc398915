"""Top-1 accuracy on tensors held in memory."""

from __future__ import annotations

import torch
from torch import nn


def top1_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> float:
    """Top-1 accuracy in percent, in eval mode, without autograd.

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
            logits = model(images[start:start + batch_size])
            correct += int((logits.argmax(dim=1) == labels[start:start + batch_size]).sum())
    model.train(was_training)
    return 100.0 * correct / len(images)
