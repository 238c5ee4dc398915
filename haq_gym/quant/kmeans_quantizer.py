"""K-means weight sharing (HAQ's model-size flow): every weight of a layer becomes one of ``2**bits`` centroids.

HAQ (after Deep Compression) clusters each layer's weights with scikit-learn's k-means
on the flattened weight and replaces every weight by its centroid. The data are
one-dimensional, so this module uses an exact 1-D Lloyd iteration on the sorted values
instead: after one sort, an assignment is a ``searchsorted`` of the ``k - 1`` midpoints
between consecutive centroids and an update is a difference of prefix sums, so an
iteration costs ``O(k log n)`` instead of ``O(n k)``. It starts from centroids spaced
with density ``p(x)**(1/3)``, the high-resolution MSE-optimal spacing (no random
initialisation, so clusterings are deterministic and need no seed), and runs to convergence.
On the default MobileNetV2 this is faster than scikit-learn's k-means++ with HAQ's
``max_iter=3`` and reaches a lower quantization error (measured in
``benchmarks/kmeans_methods.py``; figures in docs/environments.md), so no subsampling is
needed even for the largest layers.

During finetuning the cluster assignment stays fixed and the shared value of a cluster
is the mean of its members' current float weights. Because every member receives the
cluster's mean gradient, one SGD step moves the shared value exactly as HAQ's
"update, then re-project every weight onto its cluster mean" does (momentum and weight
decay included), without rewriting the weights after each step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from haq_gym.quant.grid import QuantGrid
from haq_gym.quant.protocol import Quantizer

if TYPE_CHECKING:  # qlayers imports the family registry, which imports this module
    from haq_gym.quant.qlayers import QuantLayerMixin

MIN_KMEANS_BIT = 1
MAX_KMEANS_BIT = 8
MAX_ITER = 1000
"""Lloyd iterations at most; on the default MobileNetV2 the 8-bit runs converge within about 250."""


@dataclass(frozen=True)
class Clustering:
    """A layer's clustering at one bit width: ``weight ~= centroids[labels]``.

    ``labels`` (uint8, the weight's elements in C order) index ``centroids`` (float32,
    ``2**bits`` entries; entries no weight uses repeat a neighbour's value). ``counts``
    holds the number of weights per centroid.
    """

    bits: int
    centroids: torch.Tensor
    labels: torch.Tensor
    counts: torch.Tensor


def kmeans_1d(values: np.ndarray, k: int, max_iter: int = MAX_ITER) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means of 1-D ``values`` (deterministic initialisation); returns ``(centroids, labels)``.

    ``centroids`` (float64, ``k`` entries, non-decreasing) are the exact means of their
    clusters; ``labels`` (int64) give each value's cluster. With at most ``k`` distinct
    values every value is its own centroid (exact).
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError("cannot cluster an empty array")
    if not np.all(np.isfinite(x)):
        raise ValueError("cannot cluster non-finite values")
    order = np.argsort(x, kind="stable")
    xs = x[order]
    n = xs.size
    labels = np.empty(n, dtype=np.int64)
    starts_value = np.empty(n, dtype=bool)
    starts_value[0] = True
    np.not_equal(xs[1:], xs[:-1], out=starts_value[1:])
    distinct = xs[starts_value]
    if distinct.size <= k:
        labels[order] = np.cumsum(starts_value) - 1
        return np.concatenate([distinct, np.full(k - distinct.size, distinct[-1])]), labels
    prefix = np.concatenate([[0.0], np.cumsum(xs)])
    centroids = _panter_dite_init(xs, k)
    edges = None
    for _ in range(max_iter):
        ends = np.searchsorted(xs, (centroids[:-1] + centroids[1:]) / 2, side="right")
        new_edges = np.concatenate([[0], ends, [n]])
        counts = np.diff(new_edges)
        sums = prefix[new_edges[1:]] - prefix[new_edges[:-1]]
        centroids = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        if edges is not None and np.array_equal(new_edges, edges):
            break
        edges = new_edges
    labels[order] = np.repeat(np.arange(k), np.diff(new_edges))
    return centroids, labels


def _panter_dite_init(xs: np.ndarray, k: int, bins: int = 2048) -> np.ndarray:
    """``k`` starting centroids for sorted ``xs``, spaced with density proportional to ``p(x)**(1/3)``.

    That spacing is the MSE-optimal one at high resolution (Panter and Dite, 1951). The
    density ``p`` is estimated on ``bins`` equal-count bins, so the tails and the dense
    centre are both resolved.
    """
    n = xs.size
    bins = max(1, min(bins, n - 1))
    edges = xs[np.linspace(0, n - 1, bins + 1).astype(np.int64)]
    mass = np.diff(edges) ** (2.0 / 3.0)  # (count / width) ** (1/3) * width with equal counts per bin
    cdf = np.concatenate([[0.0], np.cumsum(mass)])
    if cdf[-1] <= 0:
        return np.full(k, xs[n // 2])
    centres: np.ndarray = np.interp((np.arange(k) + 0.5) / k, cdf / cdf[-1], edges)
    return centres


def cluster_weight(weight: torch.Tensor, bits: int) -> Clustering:
    """Cluster ``weight`` into ``2**bits`` shared values."""
    _check_bits(bits)
    k = 2**bits
    centroids, labels = kmeans_1d(weight.detach().float().cpu().numpy(), k)
    counts = np.bincount(labels, minlength=k)
    with torch.inference_mode(False):
        return Clustering(
            bits,
            torch.from_numpy(centroids.astype(np.float32)),
            torch.from_numpy(labels.astype(np.uint8)),
            torch.from_numpy(counts),
        )


def shared_values(weight: torch.Tensor, clustering: Clustering) -> torch.Tensor:
    """Per centroid, the mean of its members' current values (the clustering's centroid where it has none).

    Differentiable in ``weight``: each member gets ``1 / count`` of its cluster's gradient.
    """
    labels = clustering.labels.to(weight.device, torch.long)
    counts = clustering.counts.to(weight.device)
    sums = torch.zeros(counts.numel(), dtype=weight.dtype, device=weight.device).index_add(
        0, labels, weight.reshape(-1)
    )
    means = sums / counts.clamp(min=1).to(weight.dtype)
    return torch.where(counts > 0, means, clustering.centroids.to(weight.device, weight.dtype))


class KMeansWeightQuantizer(Quantizer):
    """Weight quantizer of HAQ's k-means flow: ``2**bits`` shared values per layer (1..8 bits).

    Plugs into :class:`~haq_gym.quant.qlayers.QuantConv2d`/``QuantLinear`` through
    ``set_quantizers``. The clustering of each bit width is computed once, from the
    weights of its first use, and cached (per layer and bit width: the cache lives in
    this quantizer); :meth:`reset_calibration` forgets them (needed after loading different
    weights). In eval mode the quantized weight is cached per (bit width, weight version).
    """

    def __init__(self) -> None:
        super().__init__("weight")
        self._clusterings: dict[int, Clustering] = {}
        self._cache: dict[int, tuple[tuple[int, int], torch.Tensor]] = {}

    def set_bits(self, bits: int | None) -> None:
        if bits is not None:
            _check_bits(bits)
        self.bits = bits

    def clustering(self, weight: torch.Tensor, bits: int) -> Clustering:
        """The cached clustering at ``bits`` (computed on first use from ``weight``)."""
        if bits not in self._clusterings:
            self._clusterings[bits] = cluster_weight(weight, bits)
        return self._clusterings[bits]

    def reset_calibration(self) -> None:
        """Forget every clustering (the next use clusters the current weights again)."""
        self._clusterings = {}
        self._cache = {}

    def codebook(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(centroids float32 [2**bits], labels uint8 [numel])`` of ``weight`` at the current bit width.

        The centroids are the cluster means of the current weights, so after finetuning they
        are the finetuned shared values; ``centroids[labels]`` is exactly what
        :meth:`forward` computes in eval mode.
        """
        if self.bits is None:
            raise RuntimeError("codebook() needs a bit width")
        cl = self.clustering(weight, self.bits)
        with torch.no_grad():
            return shared_values(weight.detach(), cl).float().cpu(), cl.labels

    def grid(self, tensor: torch.Tensor | None = None) -> QuantGrid:
        raise TypeError("k-means weights have no uniform grid; use codebook() (the k-means exporter does)")

    def quantize(self, weight: torch.Tensor) -> torch.Tensor:
        bits = self.bits
        assert bits is not None
        cl = self.clustering(weight, bits)
        if self.training and torch.is_grad_enabled():
            return shared_values(weight, cl)[cl.labels.to(weight.device, torch.long)].view_as(weight)
        version = (weight._version, weight.data_ptr())
        hit = self._cache.get(bits)
        if hit is None or hit[0] != version:
            with torch.no_grad():
                values = shared_values(weight.detach(), cl)
                # empty_like keeps the weight's memory format (channels-last in the evaluator).
                q = torch.empty_like(weight).copy_(values[cl.labels.to(weight.device, torch.long)].view_as(weight))
            self._cache[bits] = (version, q)
            hit = self._cache[bits]
        return hit[1]

    def extra_repr(self) -> str:
        return f"bits={self.bits}, cached_bit_widths={sorted(self._clusterings)}"


def _check_bits(bits: int) -> None:
    if not isinstance(bits, (int, np.integer)) or not MIN_KMEANS_BIT <= bits <= MAX_KMEANS_BIT:
        raise ValueError(
            f"k-means weight quantization supports {MIN_KMEANS_BIT}..{MAX_KMEANS_BIT} bits "
            f"(2..256 centroids), got {bits!r}"
        )


def use_kmeans_weights(layers: Sequence[QuantLayerMixin]) -> None:
    """Give every wrapped layer a :class:`KMeansWeightQuantizer` (keeping its input quantizer and bit widths)."""
    for layer in layers:
        if not isinstance(layer.weight_quantizer, KMeansWeightQuantizer):
            layer.set_quantizers(KMeansWeightQuantizer(), layer.input_quantizer)
