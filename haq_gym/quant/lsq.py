"""Learned-step-size quantizers: LSQ (Esser et al. 2020), LSQ+ (Bhalgat et al. 2020) and a power-of-two variant.

Each quantizes one tensor (a layer's weight or its input activation) to
``step * clamp(round(v / step), qmin, qmax)`` with ``step`` a learned scalar:
:class:`LSQQuantizer`, :class:`LSQPlusQuantizer` (adds a learned activation offset) and
:class:`PowerOfTwoQuantizer` (steps are powers of two) share
:class:`LearnedStepQuantizer`. Conventions (see ``docs/lsq.md``):

- Integer ranges: weights signed full range ``[-2^(b-1), 2^(b-1) - 1]`` (the paper's);
  activations unsigned ``[0, 2^b - 1]`` when the calibration batch had no negative
  value (after ReLU6), else signed like weights. LSQ+ keeps the unsigned grid and
  learns an offset ``beta``: ``step * q + beta``.
- Gradients: straight-through on ``round`` only, so ``d/dv`` is 1 inside the clip range
  and 0 outside, and ``d/dstep`` is ``round(v/s) - v/s`` inside, ``qmin`` below and
  ``qmax`` above, which autograd derives from the forward below.
- Gradient scale ``g = 1 / sqrt(N * qmax)`` on the step (and the offset). ``N`` is the
  weight count for weights and the number of features of *one sample* for activations
  (``x[0].numel()``), the paper's "number of features"; counting the batch too would
  shrink ``g`` by ``sqrt(batch)`` and make it depend on the batch size.
- Initialisation ``step = 2 * mean(|v|) / sqrt(qmax)`` from the weight, or from the
  calibration batch for activations. LSQ+ on an input that goes negative starts where
  signed LSQ would (its step, and ``beta = -2^(b-1) * step``); otherwise ``beta = 0``.
- Power of two (seed 004): the learned parameter is ``log2_step`` and the step is
  ``2 ** round(log2_step)`` (straight-through round), so requantisation is a shift.

The quantizers follow :class:`~haq_gym.quant.protocol.Quantizer`, so they plug into
:class:`~haq_gym.quant.qlayers.QuantConv2d`/``QuantLinear`` like HAQ's linear quantizers.
Their calibration statistics (minimum and mean magnitude) come from a
:class:`~haq_gym.quant.observers.MeanAbsObserver`.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any, ClassVar

import torch
from torch import nn

from haq_gym.quant.grid import QuantGrid
from haq_gym.quant.observers import MeanAbsObserver
from haq_gym.quant.protocol import Quantizer, Role

MAX_BITS = 16


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """``round(x)`` (half to even) forward, identity backward."""
    return (torch.round(x) - x).detach() + x


class LSQFunction(torch.autograd.Function):
    """``step * clamp(round((v - offset) / step), qmin, qmax) + offset`` with LSQ's gradients, fused.

    Equivalent to the textbook composition (a gradient-scaled step, ``clamp`` and a
    straight-through ``round``; the tests check it against that and against hand-computed
    values), but autograd keeps two tensors (``u = (v - offset) / step`` and the output,
    which the next layer keeps anyway) instead of every intermediate, and the backward
    pass is three passes over them. ``offset`` may be ``None`` (plain LSQ).
    Backward: ``d/dv`` is 1 where ``qmin <= u <= qmax`` and 0 elsewhere; ``d/dstep`` sums
    ``round(u) - u`` inside, ``qmin`` below and ``qmax`` above, times ``g``;
    ``d/doffset`` sums the clipped elements, times ``g``.
    """

    @staticmethod
    def forward(
        ctx: Any, v: torch.Tensor, step: torch.Tensor, offset: torch.Tensor | None, g: float, qmin: int, qmax: int
    ) -> torch.Tensor:
        u = (v if offset is None else v - offset).div(step)
        out = u.clamp(qmin, qmax).round_().mul_(step)  # clamp before round: same result, the ends are integers
        if offset is not None:
            out.add_(offset)
        ctx.save_for_backward(u, out, step, offset)
        ctx.consts = (g, qmin, qmax)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        u, out, step, offset = ctx.saved_tensors
        g, qmin, qmax = ctx.consts
        # grad_v = grad_out where qmin <= u <= qmax, else 0. ATen's hardtanh backward is that
        # mask-and-multiply in one pass (bool masks cost three); its bounds are strict, so
        # they are moved one ulp outwards to keep the range's ends inside.
        low, high = _inclusive_bounds(qmin, qmax, u.dtype)
        grad_v = torch.ops.aten.hardtanh_backward(grad_out, u, low, high)
        grad_step = grad_offset = None
        if ctx.needs_input_grad[1]:
            # d/dstep per element is q - u inside and q (= qmin or qmax) outside, i.e.
            # q - u * inside, so its weighted sum is sum(grad_out * q) - sum(grad_v * u),
            # with q = (out - offset) / step read off the saved output.
            grad_q = _dot(grad_out, out)
            if offset is not None:
                grad_q = grad_q - offset * grad_out.sum()
            grad_step = (grad_q / step - _dot(grad_v, u)).mul_(g).reshape(step.shape)
        if offset is not None and ctx.needs_input_grad[2]:
            grad_offset = (grad_out.sum() - grad_v.sum()).mul_(g).reshape(offset.shape)
        return (grad_v if ctx.needs_input_grad[0] else None), grad_step, grad_offset, None, None, None


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(a * b).sum()``; one pass without a temporary when both share a dense layout."""
    dense = a.is_contiguous() or (a.dim() == 4 and a.is_contiguous(memory_format=torch.channels_last))
    if dense and a.stride() == b.stride() and a.shape == b.shape and a.dtype == b.dtype:
        n = a.numel()
        return torch.dot(a.as_strided((n,), (1,)), b.as_strided((n,), (1,)))
    return (a * b).sum()


def _outward_bounds(dtype: torch.dtype) -> dict[tuple[int, int], tuple[float, float]]:
    """For every integer range of 1..MAX_BITS bits: the largest ``dtype`` value below ``qmin``,
    the smallest above ``qmax``."""
    ranges = [(-(2 ** (b - 1)), 2 ** (b - 1) - 1) for b in range(1, MAX_BITS + 1)]
    ranges += [(0, 2**b - 1) for b in range(1, MAX_BITS + 1)]
    ends = torch.tensor(ranges, dtype=dtype)
    outwards = torch.tensor([-math.inf, math.inf], dtype=dtype).expand_as(ends)
    values = torch.nextafter(ends, outwards).tolist()
    return {r: (low, high) for r, (low, high) in zip(ranges, values, strict=True)}


# Computed once here, on the CPU: looked up in the backward pass, they cost no device sync and
# torch.compile reads them as constants (a Tensor.tolist() there would break its graph).
_BOUNDS: dict[torch.dtype, dict[tuple[int, int], tuple[float, float]]] = {
    dtype: _outward_bounds(dtype) for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64)
}


def _inclusive_bounds(qmin: int, qmax: int, dtype: torch.dtype) -> tuple[float, float]:
    """The largest value below ``qmin`` and the smallest above ``qmax`` in ``dtype`` (a table lookup)."""
    return _BOUNDS[dtype][(qmin, qmax)]


class LearnedStepQuantizer(Quantizer):
    """Fake quantizer with a learned step for one weight or activation tensor (the shared part of the family).

    The step parameter (``step``, or ``log2_step`` for powers of two) and LSQ+'s
    ``offset`` are trained with the model and saved in its state dict together with the
    ``initialized`` and ``signed`` buffers. Subclasses say how the step is parameterised.
    """

    kind: ClassVar[str]
    initialized: torch.Tensor
    signed: torch.Tensor

    def __init__(self, role: Role) -> None:
        super().__init__(role)
        self._make_parameters()
        self.register_buffer("initialized", torch.tensor(False))
        self.register_buffer("signed", torch.tensor(role == "weight"))
        # Python mirrors of the two buffers: reading a CUDA buffer in every forward would
        # synchronise the GPU once per quantizer per step.
        self.is_initialized = False
        self.is_signed = role == "weight"
        self.observer = MeanAbsObserver()

    # ---------------------------------------------------------------- what subclasses define
    @abstractmethod
    def _make_parameters(self) -> None:
        """Register the learned parameters (their names are the state dict's keys)."""

    @abstractmethod
    def current_step(self) -> torch.Tensor:
        """The step in use (a 0-d tensor carrying gradients to the learned parameter)."""

    @abstractmethod
    def _write_step(self, step: float) -> None:
        """Store ``step`` (positive) in the learned parameter, under ``no_grad``."""

    @abstractmethod
    def _rescale_step(self, ratio: float) -> None:
        """Multiply the step by ``ratio`` (a bit-width change keeps the clip range), under ``no_grad``."""

    def current_offset(self) -> torch.Tensor | None:
        """The learned offset added to every quantized value (LSQ+), or ``None``."""
        return None

    # ---------------------------------------------------------------- grid
    def qrange(self, bits: int | None = None) -> tuple[int, int]:
        """Integer range ``(qmin, qmax)`` at ``bits`` (default: the current bit width)."""
        bits = self.bits if bits is None else bits
        if bits is None:
            raise RuntimeError("quantizer has no bit width")
        if self.is_signed:
            return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        return 0, 2**bits - 1

    def grid(self, tensor: torch.Tensor | None = None) -> QuantGrid:
        """The grid values are quantized onto (for export); an uninitialised weight quantizer starts from ``tensor``."""
        if self.bits is None:
            raise RuntimeError("grid() needs a bit width")
        if not self.is_initialized:
            if tensor is None or self.role != "weight":
                raise RuntimeError("LSQ step is not initialised; run a calibration or training batch first")
            self._init_from_tensor(tensor)
        qmin, qmax = self.qrange()
        offset = self.current_offset()
        return QuantGrid(
            step=float(self.current_step().detach()),
            qmin=qmin,
            qmax=qmax,
            offset=0.0 if offset is None else float(offset.detach()),
        )

    # ---------------------------------------------------------------- bits and initialisation
    def set_bits(self, bits: int | None) -> None:
        """Change the bit width; a learned step is rescaled so the clip range stays where it was."""
        if bits is not None:
            low = 2 if self.role == "weight" or self.is_signed else 1
            if not isinstance(bits, int) or not low <= bits <= MAX_BITS:
                raise ValueError(f"LSQ {self.role} bits must be an integer in [{low}, {MAX_BITS}], got {bits!r}")
        if bits is not None and self.bits is not None and bits != self.bits and self.is_initialized:
            with torch.no_grad():
                self._rescale_step(self.qrange(self.bits)[1] / self.qrange(bits)[1])
        self.bits = bits
        if bits is not None and not self.is_initialized and self.observer.observed:
            self._init_from_stats()

    def reinitialize(self) -> None:
        """Forget the learned step: the next use re-derives it with LSQ's rule at the current bits."""
        self._set_flags(initialized=False)
        if self.bits is not None and self.observer.observed:
            self._init_from_stats()

    def reset_calibration(self) -> None:
        """Re-initialise on next use; an activation quantizer also drops its statistics.

        A weight quantizer keeps the statistics of the weight it was last initialised
        from, so setting its bits re-derives the step from them.
        """
        if self.role == "activation":
            self.observer.reset()
        self._set_flags(initialized=False)

    def observe(self, x: torch.Tensor) -> None:
        self.observer.observe(x)

    def _init_from_stats(self) -> None:
        if self.role == "activation":
            self._set_flags(signed=self.observer.minimum < 0)
        self.set_step(2.0 * self.observer.mean_abs / math.sqrt(self.qrange()[1]))

    def _init_from_tensor(self, v: torch.Tensor) -> None:
        self.observer.observe(v)
        self._init_from_stats()

    def set_step(self, step: float) -> None:
        """Set the step by hand; the quantizer counts as initialised."""
        with torch.no_grad():
            self._write_step(max(step, 1e-8))
        self._set_flags(initialized=True)

    def _set_flags(self, initialized: bool | None = None, signed: bool | None = None) -> None:
        if initialized is not None:
            self.is_initialized = bool(initialized)
            self.initialized.fill_(self.is_initialized)
        if signed is not None:
            self.is_signed = bool(signed)
            self.signed.fill_(self.is_signed)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self.is_initialized = bool(self.initialized)
        self.is_signed = bool(self.signed)

    # ---------------------------------------------------------------- forward
    def quantize(self, v: torch.Tensor) -> torch.Tensor:
        if not self.is_initialized:
            self._init_from_tensor(v)
        qmin, qmax = self.qrange()
        features = v.numel() if self.role == "weight" else v[0].numel()
        g = 1.0 / math.sqrt(features * qmax)
        # torch leaves autograd.Function.apply unannotated
        out: torch.Tensor = LSQFunction.apply(  # type: ignore[no-untyped-call]
            v, self.current_step(), self.current_offset(), g, qmin, qmax
        )
        return out

    def extra_repr(self) -> str:
        return f"{self.role}, {self.kind}, bits={self.bits}, signed={self.is_signed}"


class LSQQuantizer(LearnedStepQuantizer):
    """LSQ: the step itself is the learned parameter ``step``."""

    kind = "lsq"

    def _make_parameters(self) -> None:
        self.step = nn.Parameter(torch.tensor(1.0))

    def current_step(self) -> torch.Tensor:
        # An SGD step can carry the raw parameter through zero (seen on randomly initialised
        # networks); its magnitude is the step, so the grid never flips or collapses.
        return self.step.abs().clamp_min(1e-8)

    def _write_step(self, step: float) -> None:
        self.step.fill_(step)

    def _rescale_step(self, ratio: float) -> None:
        self.step.mul_(ratio)


class LSQPlusQuantizer(LSQQuantizer):
    """LSQ+ for activations: an unsigned grid shifted by a learned offset ``beta`` (``step * q + beta``)."""

    kind = "lsq+"

    def __init__(self, role: Role = "activation") -> None:
        if role == "weight":
            raise ValueError("LSQ+ offsets are for activations; weights stay symmetric")
        super().__init__(role)

    def _make_parameters(self) -> None:
        super()._make_parameters()
        self.offset = nn.Parameter(torch.tensor(0.0))

    def current_offset(self) -> torch.Tensor:
        return self.offset

    def _init_from_stats(self) -> None:
        assert self.bits is not None
        vmin, mean_abs = self.observer.minimum, self.observer.mean_abs
        self._set_flags(signed=False)
        if vmin < 0 and self.bits >= 2:
            # LSQ+ on an input that goes negative starts exactly where signed LSQ would: the
            # signed step for these bits, and the unsigned grid shifted down by 2^(b-1) steps.
            # (LSQ's rule on the shifted values v - min(v) gives a step about |min v| / sqrt(qmax)
            # wide whatever the spread around zero: a grid several times too coarse.)
            half = 2 ** (self.bits - 1)
            step = 2.0 * mean_abs / math.sqrt(half - 1)
            with torch.no_grad():
                self.offset.fill_(-half * step)
            self.set_step(step)
            return
        with torch.no_grad():
            self.offset.fill_(0.0)
        self.set_step(2.0 * mean_abs / math.sqrt(self.qrange()[1]))


class PowerOfTwoQuantizer(LearnedStepQuantizer):
    """Power-of-two steps (seed 004): the parameter is ``log2_step``, the step ``2 ** round(log2_step)``."""

    kind = "pot"

    def _make_parameters(self) -> None:
        self.log2_step = nn.Parameter(torch.tensor(0.0))

    def current_step(self) -> torch.Tensor:
        return torch.pow(2.0, round_ste(self.log2_step))

    def _write_step(self, step: float) -> None:
        self.log2_step.fill_(math.log2(step))

    def _rescale_step(self, ratio: float) -> None:
        self.log2_step.add_(round(math.log2(ratio)))
