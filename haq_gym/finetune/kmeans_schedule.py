"""HAQ's long k-means finetune: shared-weight updates, high-bit layers free until the last epoch, then re-clustered.

HAQ's ``finetune.py`` (k-means flow) clusters every layer's weights (``2**bits`` shared
values), and after every SGD step replaces each cluster's weights by their mean, so the
weights stay shared. With ``--free_high_bit`` (effectively always on there), layers above
6 bits are not re-projected and train as float until the last epoch, where every layer is
re-clustered from the finetuned weights and the last epoch trains the new clusters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch

from haq_gym.quant.kmeans_quantizer import KMeansWeightQuantizer, shared_values
from haq_gym.quant.qlayers import QuantLayerMixin

FREE_ABOVE_BITS = 6
"""With ``free_high_bit``, layers above this width train as float until the last epoch (HAQ's threshold)."""


class KMeansFinetuneSchedule:
    """Hooks :func:`haq_gym.finetune.trainer.train_quantized` calls for the ``kmeans`` quantizer family."""

    def __init__(
        self, layers: Sequence[QuantLayerMixin], w_bits: Sequence[int], epochs: int, free_high_bit: bool = False
    ) -> None:
        if len(layers) != len(w_bits):
            raise ValueError(f"{len(w_bits)} weight bit widths for {len(layers)} layers")
        for layer in layers:
            if not isinstance(layer.weight_quantizer, KMeansWeightQuantizer):
                raise ValueError("the k-means finetune needs k-means weight quantizers (quantizer family 'kmeans')")
        self.layers = list(layers)
        self.w_bits = [None if b == -1 else int(b) for b in w_bits]
        self.epochs = epochs
        self.free_high_bit = free_high_bit
        self._reclustered = False

    def free(self, epoch: int) -> list[bool]:
        """Which layers train as float during ``epoch``."""
        last = epoch >= self.epochs
        return [self.free_high_bit and not last and b is not None and b > FREE_ABOVE_BITS for b in self.w_bits]

    def fully_quantized(self, epoch: int) -> bool:
        """Whether every layer is at its policy's bits after ``epoch`` (only then may the model become best.pt)."""
        return not any(self.free(epoch))

    def before_epoch(self, epoch: int) -> None:
        """Free or quantize each layer for ``epoch``; the last epoch of a run with free layers re-clusters them all."""
        for layer, b, free in zip(self.layers, self.w_bits, self.free(epoch), strict=True):
            layer.weight_quantizer.set_bits(None if free else b)
        if self.free_high_bit and epoch >= self.epochs and not self._reclustered:
            for layer in self.layers:
                layer.weight_quantizer.reset_calibration()
            self._reclustered = True

    @torch.no_grad()
    def after_step(self) -> None:
        """HAQ's shared-weight update: every quantized layer's weights become their cluster's mean."""
        for layer in self.layers:
            q = cast(KMeansWeightQuantizer, layer.weight_quantizer)  # the schedule is built for k-means layers
            if q.bits is None:
                continue
            cl = q.clustering(layer.weight, q.bits)
            values = shared_values(layer.weight, cl)
            layer.weight.copy_(values[cl.labels.to(layer.weight.device, torch.long)].view_as(layer.weight))
