"""HAQ-style linear quantizers: symmetric weights and calibrated activations, nothing learned.

Both quantizers take their clip values from an observer
(:mod:`haq_gym.quant.observers`): the weight quantizer from a subsample of the weight at
its first use at each bit width, the activation quantizer from the calibration batch.
They follow :class:`~haq_gym.quant.protocol.Quantizer` and offer the two folding
capabilities, so at inference a layer applies the input's step to its cached weight.
"""

from __future__ import annotations

import torch

from haq_gym.quant.fake_quant import activation_levels, fake_quantize, weight_qmax
from haq_gym.quant.grid import QuantGrid, activation_grid, weight_grid
from haq_gym.quant.observers import ClipObserver, RandomSampleObserver, StridedSampleObserver
from haq_gym.quant.protocol import InputCodes, Quantizer, ScaledWeight


class LinearWeightQuantizer(Quantizer, ScaledWeight):
    """Symmetric per-tensor weight quantizer with an observer-chosen (default: MSE-optimal) clip per bit width.

    In eval mode the quantized weight is computed once per (bit width, weight version)
    and reused for every batch: an episode's evaluation costs one quantization per layer,
    not one per batch. Any in-place change of the weight (an optimiser step,
    ``load_state_dict``) bumps the tensor's version and invalidates that cache.
    """

    def __init__(self, observer: ClipObserver | None = None) -> None:
        super().__init__("weight")
        self.observer = StridedSampleObserver() if observer is None else observer
        self._clips: dict[int, float] = {}
        self._cache: dict[int, tuple[tuple[int, int], torch.Tensor]] = {}
        self._scaled: dict[int, tuple[tuple[int, int, float], torch.Tensor]] = {}

    def set_bits(self, bits: int | None) -> None:
        if bits is not None:
            weight_qmax(bits)
        self.bits = bits

    def clip(self, weight: torch.Tensor, bits: int) -> float:
        """Clip value for ``bits``: chosen on first use, then frozen (as HAQ freezes its weight range).

        Freezing keeps finetuning steps cheap; :meth:`reset_calibration` (called by
        :func:`haq_gym.quant.calibrate`) makes the next use choose again.
        """
        if bits not in self._clips:
            qmax = weight_qmax(bits)
            self.observer.reset()
            self.observer.observe(weight)
            self._clips[bits] = self.observer.clip(-qmax, qmax)
        return self._clips[bits]

    def reset_calibration(self) -> None:
        self.observer.reset()
        self._clips = {}
        self._cache = {}
        self._scaled = {}

    def quantize(self, weight: torch.Tensor) -> torch.Tensor:
        bits = self.bits
        assert bits is not None
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
        """Eval-mode quantized weight times ``factor``, cached like :meth:`quantize`.

        Lets a layer fold its input's quantization step into the weight (see
        :meth:`LinearActivationQuantizer.codes`), saving one pass over the activations.
        """
        assert self.bits is not None
        key = (weight._version, weight.data_ptr(), factor)
        hit = self._scaled.get(self.bits)
        if hit is None or hit[0] != key:
            with torch.no_grad():
                self._scaled[self.bits] = (key, self(weight) * factor)
            hit = self._scaled[self.bits]
        return hit[1]

    def grid(self, tensor: torch.Tensor | None = None) -> QuantGrid:
        """The grid the weight ``tensor`` is quantized onto at the current bit width (for export)."""
        if self.bits is None:
            raise RuntimeError("grid() needs a bit width")
        if tensor is None:
            raise TypeError("a linear weight quantizer's grid() needs the weight its clip is chosen from")
        return weight_grid(self.clip(tensor, self.bits), self.bits)

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


class LinearActivationQuantizer(Quantizer, InputCodes):
    """Per-tensor activation quantizer whose range comes from a calibration batch.

    While ``observing`` it passes inputs through and its observer records them (by default
    their minimum, maximum and a seeded random subsample). Inputs that were never
    negative are quantized unsigned in ``[0, alpha]`` (HAQ's "half wave", the case after
    ReLU6); others signed in ``[-alpha, alpha]`` (the linear-bottleneck inputs of
    MobileNetV2's expansion convs, which HAQ marks by hand). ``alpha`` is the observer's
    clip (default MSE-optimal) for the current bit width, cached per bit width.
    """

    def __init__(self, seed: int = 0, observer: ClipObserver | None = None) -> None:
        super().__init__("activation")
        self.observer = RandomSampleObserver(seed) if observer is None else observer
        self.signed = False
        self._alphas: dict[int, float] = {}

    @property
    def calibrated(self) -> bool:
        return self.observer.observed

    def set_bits(self, bits: int | None) -> None:
        if bits is not None and self.calibrated:
            activation_levels(bits, self.signed)
        self.bits = bits

    def reset_calibration(self) -> None:
        self.observer.reset()
        self._alphas = {}
        self.signed = False

    def alpha(self, bits: int) -> float:
        """Clip value for ``bits`` (requires calibration)."""
        if not self.calibrated:
            raise RuntimeError("activation quantizer has no calibration data; calibrate the model first")
        if bits not in self._alphas:
            qmin, qmax = activation_levels(bits, self.signed)
            self._alphas[bits] = self.observer.clip(qmin, qmax)
        return self._alphas[bits]

    def observe(self, x: torch.Tensor) -> None:
        self.observer.observe(x)
        self.signed = self.observer.minimum < 0
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

    def grid(self, tensor: torch.Tensor | None = None) -> QuantGrid:
        """The grid inputs are quantized onto at the current bit width (for export; needs calibration)."""
        if self.bits is None:
            raise RuntimeError("grid() needs a bit width")
        return activation_grid(self.alpha(self.bits), self.bits, self.signed)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        bits = self.bits
        assert bits is not None
        alpha = self.alpha(bits)
        qmin, qmax = activation_levels(bits, self.signed)
        return fake_quantize(x, alpha / qmax, qmin, qmax, ste=self.training and torch.is_grad_enabled())

    def extra_repr(self) -> str:
        return f"bits={self.bits}, signed={self.signed}, calibrated={self.calibrated}"
