"""HAQ-style linear quantizers: observers and fake quantization in one small module each.

A quantizer holds its bit width (``None`` = pass-through) and whatever it needs to pick a
range; the layer wrappers in :mod:`haq_gym.quant.qlayers` call it on the weight or on the
layer's input. Other quantizers (the LSQ family of the finetune module) plug into the
same wrappers by offering ``bits``, ``set_bits`` and ``forward``.
"""

from __future__ import annotations

import torch
from torch import nn

from haq_gym.quant.fake_quant import activation_levels, fake_quantize, mse_optimal_clip, weight_qmax
from haq_gym.quant.grid import QuantGrid

SAMPLE_SIZE = 1 << 14
"""Values an activation observer keeps to choose clip ranges (a seeded random subsample)."""


class LinearWeightQuantizer(nn.Module):
    """Symmetric per-tensor weight quantizer with an MSE-optimal clip per bit width.

    In eval mode the quantized weight is computed once per (bit width, weight version)
    and reused for every batch: an episode's evaluation costs one quantization per layer,
    not one per batch. Any in-place change of the weight (an optimiser step,
    ``load_state_dict``) bumps the tensor's version and invalidates that cache.
    """

    def __init__(self) -> None:
        super().__init__()
        self.bits: int | None = None
        self._clips: dict[int, float] = {}
        self._cache: dict[int, tuple[tuple[int, int], torch.Tensor]] = {}
        self._scaled: dict[int, tuple[tuple[int, int, float], torch.Tensor]] = {}

    def set_bits(self, bits: int | None) -> None:
        if bits is not None:
            weight_qmax(bits)
        self.bits = bits

    def clip(self, weight: torch.Tensor, bits: int) -> float:
        """Clip value for ``bits``: chosen on first use, then frozen (as HAQ freezes its weight range).

        Freezing keeps finetuning steps cheap; :meth:`reset_ranges` (called by
        :func:`haq_gym.quant.calibrate`) makes the next use choose again.
        """
        if bits not in self._clips:
            flat = weight.detach().reshape(-1)
            if flat.numel() > 4 * SAMPLE_SIZE:
                step = flat.numel() // (4 * SAMPLE_SIZE) + 1
                flat = torch.cat([flat[::step], flat.abs().max().reshape(1)])
            qmax = weight_qmax(bits)
            self._clips[bits] = mse_optimal_clip(flat, -qmax, qmax)
        return self._clips[bits]

    def reset_ranges(self) -> None:
        self._clips = {}
        self._cache = {}
        self._scaled = {}

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        bits = self.bits
        if bits is None:
            return weight
        qmax = weight_qmax(bits)
        if self.training and torch.is_grad_enabled():
            return fake_quantize(weight, self.clip(weight, bits) / qmax, -qmax, qmax, ste=True)
        version = (weight._version, weight.data_ptr())
        hit = self._cache.get(bits)
        if hit is None or hit[0] != version:
            with torch.no_grad():
                q = fake_quantize(weight.detach(), self.clip(weight, bits) / qmax, -qmax, qmax, ste=False)
            self._cache[bits] = (version, q)
            hit = self._cache[bits]
        return hit[1]

    def scaled(self, weight: torch.Tensor, factor: float) -> torch.Tensor:
        """Eval-mode quantized weight times ``factor``, cached like :meth:`forward`.

        Lets a layer fold its input's quantization step into the weight (see
        :meth:`LinearActivationQuantizer.codes`), saving one pass over the activations.
        """
        key = (weight._version, weight.data_ptr(), factor)
        hit = self._scaled.get(self.bits)
        if hit is None or hit[0] != key:
            with torch.no_grad():
                self._scaled[self.bits] = (key, self(weight) * factor)
            hit = self._scaled[self.bits]
        return hit[1]

    def grid(self, weight: torch.Tensor) -> QuantGrid:
        """The grid ``weight`` is quantized onto at the current bit width (for export)."""
        if self.bits is None:
            raise RuntimeError("grid() needs a bit width")
        qmax = weight_qmax(self.bits)
        return QuantGrid(step=self.clip(weight, self.bits) / qmax, qmin=-qmax, qmax=qmax)

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


class LinearActivationQuantizer(nn.Module):
    """Per-tensor activation quantizer whose range comes from a calibration batch.

    While ``observing`` it passes inputs through and records their minimum, maximum and a
    seeded random subsample. Inputs that were never negative are quantized unsigned in
    ``[0, alpha]`` (HAQ's "half wave", the case after ReLU6); others signed in
    ``[-alpha, alpha]`` (the linear-bottleneck inputs of MobileNetV2's expansion convs,
    which HAQ marks by hand). ``alpha`` is the MSE-optimal clip of the sample for the
    current bit width, cached per bit width.
    """

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.bits: int | None = None
        self.observing = False
        self.signed = False
        self._seed = seed
        self._sample: torch.Tensor | None = None
        self._alphas: dict[int, float] = {}

    @property
    def calibrated(self) -> bool:
        return self._sample is not None

    def set_bits(self, bits: int | None) -> None:
        if bits is not None and self.calibrated:
            activation_levels(bits, self.signed)
        self.bits = bits

    def reset_observations(self) -> None:
        self._sample = None
        self._alphas = {}
        self.signed = False

    def alpha(self, bits: int) -> float:
        """Clip value for ``bits`` (requires calibration)."""
        if self._sample is None:
            raise RuntimeError("activation quantizer has no calibration data; calibrate the model first")
        if bits not in self._alphas:
            qmin, qmax = activation_levels(bits, self.signed)
            self._alphas[bits] = mse_optimal_clip(self._sample, qmin, qmax)
        return self._alphas[bits]

    def _observe(self, x: torch.Tensor) -> None:
        flat = x.detach().reshape(-1).float()
        gen = torch.Generator(device="cpu").manual_seed(self._seed)
        n = min(SAMPLE_SIZE, flat.numel())
        idx = torch.randperm(flat.numel(), generator=gen)[:n].to(flat.device)
        extremes = torch.stack([flat.min(), flat.max()])
        new = torch.cat([flat[idx], extremes])
        self._sample = new if self._sample is None else torch.cat([self._sample, new])
        self.signed = bool(self._sample.min() < 0)
        self._alphas = {}

    def codes(self, x: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Inference only: the integer grid values ``clamp(round(x / step))`` (as floats) and the step.

        ``forward(x) == codes(x)[0] * codes(x)[1]``; a linear layer can apply the step to
        its weight instead of to every activation.
        """
        if self.bits is None:
            raise RuntimeError("codes() needs a bit width")
        qmin, qmax = activation_levels(self.bits, self.signed)
        step = self.alpha(self.bits) / qmax
        return x.mul(1.0 / step).round_().clamp_(qmin, qmax), step

    def grid(self) -> QuantGrid:
        """The grid inputs are quantized onto at the current bit width (for export; needs calibration)."""
        if self.bits is None:
            raise RuntimeError("grid() needs a bit width")
        qmin, qmax = activation_levels(self.bits, self.signed)
        return QuantGrid(step=self.alpha(self.bits) / qmax, qmin=qmin, qmax=qmax)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing:
            self._observe(x)
            return x
        bits = self.bits
        if bits is None:
            return x
        alpha = self.alpha(bits)
        qmin, qmax = activation_levels(bits, self.signed)
        return fake_quantize(x, alpha / qmax, qmin, qmax, ste=self.training and torch.is_grad_enabled())

    def extra_repr(self) -> str:
        return f"bits={self.bits}, signed={self.signed}, calibrated={self.calibrated}"
