"""The integer-only model: a list of integer ops over named int32 tensors, and its forward pass.

Everything here computes on integer tensors (checked on every forward pass by
:func:`~haq_gym.export.integer_guard.integer_only`): int32 activation codes and int32
weight codes, int32 accumulators (exact: the exporter bounds every accumulator below
``2**31`` before choosing int32 matmuls), int64 only for the ``x * m`` products of
requantisation. Floats appear only in the metadata (each tensor's step, for reading codes
back as real values) and at the model boundary, where :meth:`IntegerModel.quantize_input`
turns an image into 8-bit codes once.

Ops (see ``docs/integer_export.md``):

- :class:`ConvOp`: conv or linear on codes, then ``(acc << k) + bias`` (int32 bias with
  ``k`` fractional bits, see :mod:`haq_gym.export.build`), then a per-channel
  :class:`Requant` (dyadic multiplier, half-to-even rounding, clamp: the clamp is the
  ReLU/ReLU6 and the next quantizer's range); no requant for the classifier, whose
  output is the int32 logits.
- :class:`AddOp`: residual addition of two int32 tensors on the same fine scale.
- :class:`RequantOp`: fine-scale int32 tensor -> codes of the next layer's grid.
- :class:`PoolOp`: global average pooling as an integer sum and a dyadic rescale.
- :class:`ReluOp`: ``max(x, 0)`` on a fine-scale int32 tensor (ResNet's ReLU after the add).
- :class:`ShortcutOp`: ResNet option-A shortcut: spatial subsampling and zero channels.
- :class:`HardSwishOp`: MobileNetV3's ``hardswish(y) = y * hardsigmoid(y)`` of an int32
  accumulator: the hard-sigmoid gate as a clamped dyadic rescale, then the exact int64
  product of accumulator and gate, rescaled (``requantize_wide``).
- :class:`MulOp`: the squeeze-excitation product of a fine-scale tensor and a per-channel
  gate, in int64, rescaled onto the next grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from haq_gym.export.dyadic import MAX_SHIFT, requantize, requantize_wide, round_shift
from haq_gym.export.integer_guard import integer_only
from haq_gym.quant.grid import QuantGrid

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1


class IntegerOverflow(RuntimeError):
    """An intermediate value left the int32 range it is specified to fit."""


@dataclass
class Requant:
    """``clamp(round(x * multiplier / 2**shift), lo, hi)`` per channel (halves to even).

    ``multiplier``/``shift``: int64 ``[C]`` (or ``[1]``: one value for all channels).
    ``lo, hi = INT32_MIN, INT32_MAX`` marks a fine-scale target, which is range-checked.
    """

    multiplier: torch.Tensor
    shift: torch.Tensor
    lo: int
    hi: int

    def __post_init__(self) -> None:
        if self.multiplier.shape != self.shift.shape or self.multiplier.dim() != 1:
            raise ValueError(
                f"requant multiplier {tuple(self.multiplier.shape)} and shift "
                f"{tuple(self.shift.shape)} must be equal 1-d shapes"
            )
        if self.lo > self.hi:
            raise ValueError(f"empty clamp range [{self.lo}, {self.hi}]")

    @property
    def is_shift(self) -> bool:
        """Whether every channel's multiplier is ``±1``: requantisation is a rounding shift."""
        return bool((self.multiplier.abs() == 1).all())

    def apply(self, x: torch.Tensor, channel_dim: int) -> torch.Tensor:
        """Requantise int32 ``x`` (or int64 ``|x| < 2**62``) along ``channel_dim``; int32 result.

        A fine-scale target (``hi`` at the top of int32) is checked, never saturated:
        saturating a residual stream would silently change the model; its ``lo`` is
        still applied (a ReLU on the fine scale is the clamp at 0). An int64 input or a
        shift beyond 62 goes through :func:`requantize_wide` (the same rounding, exact
        for products wider than int64).
        """
        view = [1] * x.dim()
        view[channel_dim] = -1
        if x.dtype == torch.int64 or int(self.shift.max()) > MAX_SHIFT:
            out = requantize_wide(x.to(torch.int64), self.multiplier.view(view), self.shift.view(view))
        else:
            out = requantize(x, self.multiplier.view(view), self.shift.view(view))
        if self.hi == INT32_MAX:
            return _checked(out, "requantised fine-scale tensor").clamp_(min=self.lo).to(torch.int32)
        return out.clamp_(self.lo, self.hi).to(torch.int32)


@dataclass
class IntegerLayer:
    """One quantized layer's weights: integer codes at ``bits`` bits and how to read them.

    ``codes``: int32 of the float weight's shape (``[Cout, Cin/groups, kh, kw]`` or
    ``[out, in]``). ``fmt`` is ``"linear"`` (real weight ``step * code``) or ``"log8"``
    (seed 004's sign-magnitude log codes, ``log_max`` = the per-tensor maximum exponent
    on the 1/16 grid; the engine computes with ``linear_codes``, their decoding onto the
    uniform grid ``step`` with ``log_frac_bits`` bits below the largest weight, see
    :mod:`haq_gym.quant.log_quantizer`).
    """

    name: str
    codes: torch.Tensor
    bits: int
    signed: bool
    step: float
    fmt: str = "linear"
    log_max: int = 0
    log_frac_bits: int = 0
    linear_codes: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.codes.dtype != torch.int32:
            raise TypeError(f"layer {self.name!r}: weight codes must be int32, got {self.codes.dtype}")
        if self.fmt not in ("linear", "log8"):
            raise ValueError(f"layer {self.name!r}: unknown weight format {self.fmt!r}")
        if self.fmt == "linear":
            self.linear_codes = self.codes
        elif self.linear_codes is None:
            raise ValueError(f"layer {self.name!r}: a log8 layer needs its linear_codes")

    @property
    def engine_codes(self) -> torch.Tensor:
        """The codes the engine computes with: ``linear_codes``, which construction always sets."""
        assert self.linear_codes is not None
        return self.linear_codes


@dataclass
class ConvOp:
    """Conv2d (``kind="conv"``) or Linear (``kind="linear"``) on codes, with int32 bias and requant.

    ``bias``: int32 ``[Cout]`` at the accumulator scale times ``2**bias_shift``.
    ``input_offset``: ``(m, n)`` for an LSQ+ input offset ``beta``: the exact term
    ``beta/s_x * sum(in-bounds weight codes)`` in accumulator units (times
    ``2**bias_shift``) is ``round(S * m / 2**n)``, with ``S`` the integer conv of a
    ones-image with the weight codes (border taps see the real zero padding, not beta).
    ``requant=None``: the output is ``(acc << bias_shift) + bias`` (the logits).
    """

    kind: str
    layer: int
    src: str
    dst: str
    bias: torch.Tensor
    bias_shift: int
    requant: Requant | None
    stride: int = 1
    padding: int = 0
    groups: int = 1
    input_offset: tuple[int, int] | None = None
    _offset_maps: dict[tuple[int, ...], torch.Tensor] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in ("conv", "linear"):
            raise ValueError(f"unknown conv op kind {self.kind!r}")
        if self.bias.dtype != torch.int32 or self.bias.dim() != 1:
            raise TypeError(f"conv op bias must be a 1-d int32 tensor, got {self.bias.dtype} {tuple(self.bias.shape)}")
        if not 0 <= self.bias_shift <= 31:
            raise ValueError(f"bias_shift must be in 0..31, got {self.bias_shift}")


@dataclass
class AddOp:
    """``dst = a + b`` on int32 tensors of the same fine scale (the residual addition)."""

    a: str
    b: str
    dst: str


@dataclass
class RequantOp:
    """``dst = requant(src + add)``: a fine-scale int32 tensor onto the next layer's codes."""

    src: str
    dst: str
    add: int
    requant: Requant


@dataclass
class PoolOp:
    """Global average pooling: ``dst = requant(sum_{h,w} src + add)``, ``1/(H*W)`` is inside the multiplier.

    ``keepdim``: the result is ``[N, C, 1, 1]`` (a squeeze-excitation's 1x1 convs read it), else ``[N, C]``.
    """

    src: str
    dst: str
    add: int
    requant: Requant
    keepdim: bool = False


@dataclass
class ReluOp:
    """``dst = max(src, 0)`` on a zero-offset grid (exact: rounding commutes with a clamp at 0)."""

    src: str
    dst: str


@dataclass
class ShortcutOp:
    """Option-A shortcut: ``dst = pad_channels(src[:, :, ::stride, ::stride], front, back)`` with zeros.

    Code 0 is the real value 0 on the fine scale it runs on, so this is exactly the
    float model's parameter-free shortcut (He et al. 2016, option A).
    """

    src: str
    dst: str
    stride: int
    front: int
    back: int

    def __post_init__(self) -> None:
        if self.stride < 1 or self.front < 0 or self.back < 0:
            raise ValueError(
                f"shortcut needs stride >= 1 and non-negative padding, got {self.stride}, {self.front}, {self.back}"
            )


@dataclass
class HardSwishOp:
    """``dst = out((x * g)[channel])`` with ``g = gate(x) + 2**(gate_bits-1)``: hard-swish of an int32 accumulator.

    ``x`` is a conv/linear's int32 output ``(acc << k) + bias`` whose real value is
    ``y_c = S_c * x`` per channel (BatchNorm folded into ``S_c``). ``hardswish(y) = y *
    hardsigmoid(y)`` and ``hardsigmoid(y) = clamp(y / 6 + 1/2, 0, 1)`` is affine then a
    clamp, so ``g = clamp(round(x * S_c * 2**F / 6) + 2**(F-1), 0, 2**F)`` is the gate on
    the scale ``2**-F`` (``gate`` carries ``S_c 2**F / 6`` and the clamp ``[-2**(F-1),
    2**(F-1)]``); the product ``x * g`` is exact in int64 (``|x| < 2**31``, ``g <= 2**30``)
    and ``out`` rescales it by ``S_c 2**-F / S_dst`` (:func:`requantize_wide`).
    """

    src: str
    dst: str
    gate: Requant
    gate_bits: int
    out: Requant

    def __post_init__(self) -> None:
        if not 1 <= self.gate_bits <= 30:
            raise ValueError(f"hard-swish gate bits must be in 1..30, got {self.gate_bits}")


@dataclass
class MulOp:
    """``dst = requant(a * b + add)`` in int64; ``b`` broadcasts against ``a`` (a squeeze-excitation gate)."""

    a: str
    b: str
    dst: str
    add: int
    requant: Requant


Op = ConvOp | AddOp | RequantOp | PoolOp | ReluOp | ShortcutOp | HardSwishOp | MulOp


@dataclass
class IntegerModel:
    """An exported model: weights, ops in execution order, and the real-valued meaning of each tensor.

    ``grids[name]`` is the grid of integer tensor ``name`` (``step`` and clamp range; for
    fine-scale tensors the range is int32). ``layer_inputs[layer name]`` is the tensor
    that layer consumes, where the fake-quant model's input codes are compared.
    ``output_step`` turns the int32 logits back into the fake-quant model's logits.
    """

    input_grid: QuantGrid
    layers: list[IntegerLayer]
    ops: list[Op]
    grids: dict[str, QuantGrid]
    layer_inputs: dict[str, str]
    input_name: str
    output_name: str
    output_step: float
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        known = {self.input_name}
        for op in self.ops:
            srcs = (op.a, op.b) if isinstance(op, (AddOp, MulOp)) else (op.src,)
            for s in srcs:
                if s not in known:
                    raise ValueError(f"op {type(op).__name__} reads {s!r} before any op writes it")
            known.add(op.dst)
            if isinstance(op, ConvOp):
                if not 0 <= op.layer < len(self.layers):
                    raise ValueError(f"conv op refers to layer {op.layer}; the model has {len(self.layers)}")
                self._check_accumulator(op)
        if self.output_name not in known:
            raise ValueError(f"no op writes the output tensor {self.output_name!r}")

    def _check_accumulator(self, op: ConvOp) -> None:
        """Refuse a conv whose worst-case ``(acc << k) + bias (+ offset term)`` could leave int32.

        The int32 matmul and shift would wrap silently, so this bound (from the weights and
        the input grid's range) is what makes them exact; checked for every model, loaded
        files included.
        """
        grid = self.grids.get(op.src)
        if grid is None:
            raise ValueError(f"conv op reads {op.src!r}, which has no grid")
        w = self.layers[op.layer].engine_codes
        sum_abs = w.abs().to(torch.int64).reshape(w.shape[0], -1).sum(dim=1)
        worst = sum_abs * max(abs(grid.qmin), abs(grid.qmax))
        total = torch.bitwise_left_shift(worst, op.bias_shift) + op.bias.abs().to(torch.int64)
        if op.input_offset is not None:
            m, n = op.input_offset
            scaled = sum_abs * abs(m)
            term = torch.bitwise_right_shift(scaled, n) if n >= 0 else torch.bitwise_left_shift(scaled, -n)
            total = total + term + 1
        if int(worst.max()) > INT32_MAX or int(total.max()) > INT32_MAX:
            raise ValueError(
                f"conv op on layer {self.layers[op.layer].name!r}: its worst-case accumulator "
                f"({int(total.max())}) does not fit int32"
            )

    # ------------------------------------------------------------------ boundary
    def quantize_input(self, images: torch.Tensor) -> torch.Tensor:
        """Float images ``[N, 3, H, W]`` -> int32 codes on :attr:`input_grid` (the one float step, before the integers).

        The same ``clamp(round(x / step))`` (halves to even) that the fake-quant reference
        applies to its input (see :func:`haq_gym.export.compare.fake_quant_input`).
        """
        g = self.input_grid
        return torch.clamp(torch.round(images.double() / g.step), g.qmin, g.qmax).to(torch.int32)

    # ------------------------------------------------------------------ forward
    def forward(self, codes: torch.Tensor, record: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Integer-only forward pass: int32 image codes ``[N, 3, H, W]`` -> int32 logits ``[N, classes]``.

        Runs under :func:`integer_only`, which raises on any floating-point tensor op.
        With ``record`` the second result maps every tensor name to its value.
        """
        if codes.dtype != torch.int32:
            raise TypeError(f"the integer model takes int32 codes, got {codes.dtype}")
        g = self.input_grid
        with integer_only():
            if bool((codes < g.qmin).any()) or bool((codes > g.qmax).any()):
                raise ValueError(f"input codes must lie in [{g.qmin}, {g.qmax}]")
            env: dict[str, torch.Tensor] = {self.input_name: codes}
            last_use = self._last_use()
            for index, op in enumerate(self.ops):
                if isinstance(op, ConvOp):
                    out = self._conv(op, env[op.src])
                elif isinstance(op, AddOp):
                    out = _checked(env[op.a].to(torch.int64) + env[op.b], f"residual add {op.dst}").to(torch.int32)
                elif isinstance(op, RequantOp):
                    x = env[op.src]
                    if op.add:
                        x = _checked(x.to(torch.int64) + op.add, f"requant input {op.dst}").to(torch.int32)
                    out = op.requant.apply(x, 1)
                elif isinstance(op, ReluOp):
                    out = env[op.src].clamp_min(0)
                elif isinstance(op, ShortcutOp):
                    x = env[op.src][:, :, :: op.stride, :: op.stride]
                    n, _, h, w = x.shape
                    out = torch.cat(
                        [
                            torch.zeros((n, op.front, h, w), dtype=torch.int32),
                            x,
                            torch.zeros((n, op.back, h, w), dtype=torch.int32),
                        ],
                        dim=1,
                    )
                elif isinstance(op, HardSwishOp):
                    x = env[op.src]
                    gate = op.gate.apply(x, 1).to(torch.int64) + (1 << (op.gate_bits - 1))
                    out = op.out.apply(x.to(torch.int64) * gate, 1)
                elif isinstance(op, MulOp):
                    product = env[op.a].to(torch.int64) * env[op.b] + op.add
                    out = op.requant.apply(_checked_wide(product, f"product {op.dst}"), 1)
                else:
                    x = env[op.src].to(torch.int64).sum(dim=(2, 3), keepdim=op.keepdim) + op.add
                    if int(x.min()) >= INT32_MIN and int(x.max()) <= INT32_MAX:
                        x = x.to(torch.int32)
                    out = op.requant.apply(_checked_wide(x, f"pooled sum {op.dst}"), 1)
                env[op.dst] = out
                if not record:  # drop what no later op reads: peak memory stays at a few feature maps
                    for name in [n for n in env if last_use.get(n, -1) <= index and n != self.output_name]:
                        del env[name]
            logits = env[self.output_name]
        return logits, (env if record else {})

    def predict(self, images: torch.Tensor, batch_size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
        """``(int32 logits, int64 predictions)`` for float images, quantized at the boundary, in batches."""
        outs = [
            self.forward(self.quantize_input(images[i : i + batch_size]))[0] for i in range(0, len(images), batch_size)
        ]
        logits = torch.cat(outs)
        return logits, logits.argmax(dim=1)

    def _last_use(self) -> dict[str, int]:
        """Index of the last op reading each tensor."""
        last: dict[str, int] = {}
        for index, op in enumerate(self.ops):
            for name in (op.a, op.b) if isinstance(op, (AddOp, MulOp)) else (op.src,):
                last[name] = index
        return last

    def _conv(self, op: ConvOp, x: torch.Tensor) -> torch.Tensor:
        w = self.layers[op.layer].engine_codes
        # [N, out] for a linear layer, [N, Cout, Ho, Wo] for a convolution
        acc = x @ w.t() if op.kind == "linear" else conv2d_int(x, w, op.stride, op.padding, op.groups)
        view = [1] * acc.dim()
        view[1] = -1
        # int32 throughout: the exporter chose bias_shift so that the worst case fits.
        total = acc.bitwise_left_shift_(op.bias_shift).add_(op.bias.view(view))
        if op.input_offset is not None:
            total.add_(self._offset_map(op, x.shape))
        if op.requant is None:
            return total
        return op.requant.apply(total, 1)

    def _offset_map(self, op: ConvOp, shape: Sequence[int]) -> torch.Tensor:
        """``round(S * m / 2**n)`` with ``S`` the conv of a ones-image (cached per input size)."""
        key = tuple(shape[1:])
        if key not in op._offset_maps:
            assert op.input_offset is not None  # called only for ops with an input offset
            w = self.layers[op.layer].engine_codes
            ones = torch.ones((1, *key), dtype=torch.int32)
            s = ones @ w.t() if op.kind == "linear" else conv2d_int(ones, w, op.stride, op.padding, op.groups)
            m, n = op.input_offset
            op._offset_maps[key] = _checked(round_shift(s.to(torch.int64) * m, n), "input offset term").to(torch.int32)
        return op._offset_maps[key]


def _checked(x: torch.Tensor, what: str) -> torch.Tensor:
    """``x`` (int64) if it fits int32, else :class:`IntegerOverflow` naming the tensor."""
    lo, hi = int(x.min()), int(x.max())
    if lo < INT32_MIN or hi > INT32_MAX:
        raise IntegerOverflow(f"{what} spans [{lo}, {hi}], outside int32")
    return x


def _checked_wide(x: torch.Tensor, what: str) -> torch.Tensor:
    """``x`` if every value lies below ``2**62`` in magnitude (what :func:`requantize_wide` takes)."""
    lo, hi = int(x.min()), int(x.max())
    if lo <= -(2**62) or hi >= 2**62:
        raise IntegerOverflow(f"{what} spans [{lo}, {hi}], outside the 62-bit range of the wide rescale")
    return x


def conv2d_int(x: torch.Tensor, w: torch.Tensor, stride: int, padding: int, groups: int) -> torch.Tensor:
    """Integer 2-d convolution: int32 ``x [N, Cin, H, W]``, ``w [Cout, Cin/groups, kh, kw]`` -> ``[N, Cout, Ho, Wo]``.

    Zero padding (code 0 is the real value 0 on every zero-offset grid). Exact as long as
    no accumulator reaches ``2**31``, which the exporter proves from the weights and the
    input range before it picks int32 (torch's integer matmul accumulates in the input dtype).
    Depthwise convs (``groups == Cin == Cout``) multiply-add shifted views; the others
    gather the ``kh * kw`` shifted views and run one batched integer matmul per group.
    """
    x = x.to(torch.int32)
    n, cin, h, wd = x.shape
    cout, cin_g, kh, kw = w.shape
    if cin_g * groups != cin:
        raise ValueError(f"conv weight {tuple(w.shape)} with groups={groups} does not fit {cin} input channels")
    if padding:
        padded = torch.zeros((n, cin, h + 2 * padding, wd + 2 * padding), dtype=torch.int32)
        padded[:, :, padding : padding + h, padding : padding + wd] = x
        x = padded
    ho = (x.shape[2] - kh) // stride + 1
    wo = (x.shape[3] - kw) // stride + 1
    taps = [
        x[:, :, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride]
        for i in range(kh)
        for j in range(kw)
    ]
    if groups == cin and cout == cin:
        acc = torch.zeros((n, cout, ho, wo), dtype=torch.int32)
        flat = w.reshape(cout, kh * kw)
        for t, tap in enumerate(taps):
            acc.addcmul_(tap, flat[:, t].view(1, cout, 1, 1))
        return acc
    if kh == kw == 1:
        cols = taps[0].reshape(n, groups, cin_g, ho * wo)
    else:
        cols = torch.stack(taps, dim=2).reshape(n, groups, cin_g * kh * kw, ho * wo)
    out = torch.matmul(w.reshape(groups, cout // groups, cin_g * kh * kw), cols)  # [N, G, Cout/G, L]
    return out.reshape(n, cout, ho, wo)
