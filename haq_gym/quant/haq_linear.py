"""HAQ's own linear quantizer (mit-han-lab/haq, ``lib/utils/quantize_utils.py``), written from its formulas.

The quantizer family ``"haq"`` (:mod:`haq_gym.quant.families`). It differs from haq-gym's
``linear`` family (MSE-optimal clip at every width, frozen ranges) in four ways, each HAQ's:

- weights: symmetric per tensor, clip ``t`` = the KL-J threshold below 5 bits, ``max|W|``
  from 5 bits on; ``t`` is frozen once chosen; the straight-through gradient reaches every
  weight, clipped or not;
- activations: clip ``alpha = min(6, max|x|, KL-J threshold)`` below 5 bits and
  ``min(6, max|x|)`` from 5 bits on (the 6.0 cap is ReLU6's range);
- ``alpha`` is a trainable parameter during finetuning, with HAQ's differentiable clamp
  ``0.5 * (|x| - |x - alpha| + alpha)`` (unsigned) or ``0.5 * (|x + alpha| - |x - alpha|)``
  (signed), so it learns from the inputs above it (PACT-like) and from weight decay;
- calibration (one forward pass of a train batch) is run per episode by the evaluator
  when ``calibration="per_episode"``.

Both follow :class:`~haq_gym.quant.protocol.Quantizer`; the family is registered as
``"haq"`` in :mod:`haq_gym.quant.families`. Neither offers the input-step folding
capabilities, so a layer fake-quantizes input and weight separately.

Signed or unsigned input is detected from the calibration batch (HAQ marks it by hand
per layer of its MobileNetV2; docs/haq_fidelity.md lists the difference). The KL-J
threshold is computed on at most ``KL_SAMPLE_SIZE`` values (a seeded subsample of the
batch, an even stride of a large weight, its maximum kept; HAQ uses the whole tensor),
which keeps it to milliseconds per layer.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from haq_gym.quant.fake_quant import activation_levels, weight_qmax
from haq_gym.quant.grid import QuantGrid, activation_grid, weight_grid
from haq_gym.quant.protocol import Quantizer

ACTIVATION_CAP = 6.0
"""HAQ's upper bound on every activation clip (its ``activation_range`` starts at 6.0, ReLU6's range)."""
KL_BELOW_BITS = 5
"""Below this width the clip is the KL-J threshold; from it on, the maximum (capped at 6.0 for activations)."""
KL_SAMPLE_SIZE = 1 << 16


def kl_j_threshold(data: np.ndarray | torch.Tensor, bits: int) -> float:
    """HAQ's clip threshold: the cut of ``|data|`` whose CDF is closest, in a symmetric KL sense, to its coarsening.

    ``|data|`` is histogrammed on ``[0, max]`` with NumPy's ``'sqrt'`` bin count and turned
    into a cumulative distribution ``P``. For each candidate bin ``i`` from
    ``2**(bits-1) + 1`` up to (excluding) the bin count, ``Q`` is ``P[:i]`` sampled at
    ``2**(bits-1)`` evenly spaced points and linearly interpolated back to ``i`` points;
    the divergence is ``sum (P - Q) * log2(P / Q)`` over the entries where both are
    positive. The threshold of the best ``i`` is ``(i + 0.5) * bin_width``. With too few bins
    for any candidate, the maximum is returned.
    """
    x = np.abs(np.asarray(data.detach().cpu() if isinstance(data, torch.Tensor) else data, dtype=np.float64)).ravel()
    top = float(x.max()) if x.size else 0.0
    if top == 0.0:
        return 1.0
    hist, edges = np.histogram(x, bins="sqrt", range=(0.0, top))
    width = float(edges[1] - edges[0])
    cdf = np.cumsum(hist / hist.sum())
    levels, nbins = 2 ** (bits - 1), len(hist)
    if levels < 2 or nbins <= levels + 1:
        return top
    # Every candidate at once: row r is cut i = levels + 1 + r, columns are the bins j < i.
    cut = np.arange(levels + 1, nbins)[:, None]
    points = np.arange(levels)[None, :] * (cut - 1) / (levels - 1)  # where P[:i] is sampled
    lo = np.minimum(np.floor(points).astype(np.int64), cut - 1)
    hi = np.minimum(lo + 1, cut - 1)
    frac = points - lo
    sampled = cdf[lo] * (1.0 - frac) + cdf[hi] * frac
    j = np.arange(nbins)[None, :]
    seg = np.clip(np.floor(j * (levels - 1) / (cut - 1)).astype(np.int64), 0, levels - 2)
    x0, x1 = np.take_along_axis(points, seg, 1), np.take_along_axis(points, seg + 1, 1)
    y0, y1 = np.take_along_axis(sampled, seg, 1), np.take_along_axis(sampled, seg + 1, 1)
    q = y0 + (y1 - y0) * (j - x0) / (x1 - x0)
    p = np.broadcast_to(cdf[None, :], q.shape)
    ok = (j < cut) & (p > 0) & (q > 0)
    ratio = np.where(ok, p / np.where(ok, q, 1.0), 1.0)
    div = np.where(ok, (p - q) * np.log2(ratio), 0.0).sum(axis=1)
    best = int(np.argmin(div)) + levels + 1
    return float((best + 0.5) * width)


def haq_weight_clip(weight: torch.Tensor, bits: int) -> float:
    """HAQ's weight range ``t``: KL-J threshold below 5 bits, else ``max|W|``."""
    flat = weight.detach().reshape(-1)
    top = float(flat.abs().max())
    if top == 0.0:
        return 1.0
    if bits >= KL_BELOW_BITS:
        return top
    if flat.numel() > KL_SAMPLE_SIZE:
        flat = torch.cat([flat[:: flat.numel() // KL_SAMPLE_SIZE + 1], flat.abs().max().reshape(1)])
    return kl_j_threshold(flat, bits)


def haq_activation_clip(sample: torch.Tensor, max_abs: float, bits: int) -> float:
    """HAQ's activation range ``alpha``: ``min(6, max|x|, KL-J)`` below 5 bits, else ``min(6, max|x|)``."""
    alpha = min(ACTIVATION_CAP, max_abs)
    if bits < KL_BELOW_BITS:
        alpha = min(alpha, kl_j_threshold(sample, bits))
    return alpha if alpha > 0 else 1.0


class HAQWeightQuantizer(Quantizer):
    """Symmetric per-tensor weight quantizer, ``s = t / (2**(b-1) - 1)``, ``Wq = s * round(clip(W, -t, t) / s)``.

    ``t`` (buffer ``weight_range``, -1 = not chosen yet) is chosen from the weight on first
    use at a bit width and frozen, as HAQ freezes it after calibration;
    :meth:`reset_calibration` (called by :func:`haq_gym.quant.calibrate`) makes the next use
    choose again. Nothing is observed: the range comes from the weight itself.
    """

    weight_range: torch.Tensor
    range_bits: torch.Tensor

    def __init__(self) -> None:
        super().__init__("weight")
        self.register_buffer("weight_range", torch.tensor(-1.0))
        self.register_buffer("range_bits", torch.tensor(0))

    def set_bits(self, bits: int | None) -> None:
        if bits is not None:
            weight_qmax(bits)
        self.bits = bits

    def reset_calibration(self) -> None:
        self.weight_range.fill_(-1.0)
        self.range_bits.fill_(0)

    def clip(self, weight: torch.Tensor, bits: int) -> float:
        """The frozen range ``t`` for ``bits`` (chosen from ``weight`` if not chosen yet at these bits)."""
        if float(self.weight_range) <= 0 or int(self.range_bits) != bits:
            self.weight_range.fill_(haq_weight_clip(weight, bits))
            self.range_bits.fill_(bits)
        return float(self.weight_range)

    def quantize(self, weight: torch.Tensor) -> torch.Tensor:
        bits = self.bits
        assert bits is not None
        qmax = weight_qmax(bits)
        t = self.clip(weight, bits)
        step = t / qmax
        with torch.no_grad():
            q = torch.clamp(weight, -t, t).div(step).round_().mul_(step)
        if self.training and torch.is_grad_enabled():
            return weight + (q - weight).detach()  # HAQ's straight-through estimator: unmasked
        return q

    def grid(self, tensor: torch.Tensor | None = None) -> QuantGrid:
        """The grid the weight ``tensor`` is quantized onto at the current bit width (for export)."""
        if self.bits is None:
            raise RuntimeError("grid() needs a bit width")
        if tensor is None:
            raise TypeError("a HAQ weight quantizer's grid() needs the weight its range is chosen from")
        return weight_grid(self.clip(tensor, self.bits), self.bits)

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


class HAQActivationQuantizer(Quantizer):
    """Input-activation quantizer with a calibrated, then trainable, clip ``alpha`` (parameter ``activation_range``).

    While ``observing`` it records ``max|x|``, the sign of the inputs and a seeded subsample
    for the KL-J threshold. :meth:`set_bits` on a calibrated quantizer sets
    ``activation_range`` to HAQ's calibrated clip for those bits, and so does
    :meth:`reinitialize`; finetuning then trains it.
    Unsigned: ``s = alpha / (2**b - 1)``; signed: ``b - 1`` bits per side, ``s = alpha / (2**(b-1) - 1)``.
    """

    signed_input: torch.Tensor

    def __init__(self, seed: int = 0) -> None:
        super().__init__("activation")
        self._seed = seed
        self.activation_range = nn.Parameter(torch.tensor(ACTIVATION_CAP))
        self.register_buffer("signed_input", torch.tensor(False))
        self._sample: torch.Tensor | None = None
        self._max_abs = 0.0
        self._alphas: dict[int, float] = {}

    @property
    def signed(self) -> bool:
        return bool(self.signed_input)

    @property
    def calibrated(self) -> bool:
        return self._sample is not None

    def reset_calibration(self) -> None:
        self._sample = None
        self._max_abs = 0.0
        self._alphas = {}
        self.signed_input.fill_(False)

    def calibrated_alpha(self, bits: int) -> float:
        """HAQ's calibrated clip for ``bits`` (needs calibration)."""
        if self._sample is None:
            raise RuntimeError("activation quantizer has no calibration data; calibrate the model first")
        if bits not in self._alphas:
            self._alphas[bits] = haq_activation_clip(self._sample, self._max_abs, bits)
        return self._alphas[bits]

    def set_bits(self, bits: int | None) -> None:
        if bits is not None and self.calibrated:
            activation_levels(bits, self.signed)
            self._fill_range(bits)
        self.bits = bits

    def reinitialize(self) -> None:
        """Put the trainable range back to its calibrated value for the current bits."""
        if self.bits is not None and self.calibrated:
            self._fill_range(self.bits)

    def _fill_range(self, bits: int) -> None:
        with torch.no_grad():
            self.activation_range.fill_(self.calibrated_alpha(bits))

    def observe(self, x: torch.Tensor) -> None:
        flat = x.detach().reshape(-1).float()
        gen = torch.Generator(device="cpu").manual_seed(self._seed)
        n = min(KL_SAMPLE_SIZE, flat.numel())
        idx = torch.randperm(flat.numel(), generator=gen)[:n].to(flat.device)
        new = flat[idx].cpu()
        self._sample = new if self._sample is None else torch.cat([self._sample, new])
        self._max_abs = max(self._max_abs, float(flat.abs().max()))
        if bool(flat.min() < 0):
            self.signed_input.fill_(True)
        self._alphas = {}

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        bits = self.bits
        assert bits is not None
        qmin, qmax = activation_levels(bits, self.signed)
        if self.training and torch.is_grad_enabled():
            a = self.activation_range
            xc = 0.5 * ((x + a).abs() - (x - a).abs()) if self.signed else 0.5 * (x.abs() - (x - a).abs() + a)
            trained_step = a.detach() / qmax
            return xc + (torch.round(xc.detach() / trained_step) * trained_step - xc).detach()
        alpha = float(self.activation_range.detach())
        step = alpha / qmax
        return x.clamp(qmin * step, alpha).div(step).round_().mul_(step)

    def grid(self, tensor: torch.Tensor | None = None) -> QuantGrid:
        """The grid inputs are quantized onto at the current bit width and trained range (for export)."""
        if self.bits is None:
            raise RuntimeError("grid() needs a bit width")
        return activation_grid(float(self.activation_range.detach()), self.bits, self.signed)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, signed={self.signed}, calibrated={self.calibrated}"
