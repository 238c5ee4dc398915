"""Integer form of MobileNetV3-Small: hard-swish, hard-sigmoid and squeeze-excitation in integers.

The fake-quant model quantizes only the inputs of its conv/linear layers, so the input of
every hard-swish is a float BatchNorm output, not a code, and a squeeze-excitation block
pools and scales the *unquantized* depthwise output. The integer model therefore works on
the exact int32 accumulator ``x`` of the layer before each non-linearity (``y_c = S_c *
x`` per channel, BatchNorm folded into ``S_c``) and keeps unquantized values on fine int32
scales, as the residual chains do (``docs/integer_export.md``, 1.3 and 1.6):

- **hard-sigmoid** ``clamp(y / 6 + 1/2, 0, 1)`` is affine then a clamp, so it is one
  dyadic rescale onto the scale ``2**-F`` with the clamp ``[0, 2**F]`` (``F <= 24``): the
  squeeze-excitation gate is the second 1x1 conv requantised onto the grid ``step = 6 *
  2**-F, offset = -3`` with the clamp of ``[-3, 3]``.
- **hard-swish** ``y * hardsigmoid(y)``: that gate computed from the accumulator, then the
  exact int64 product ``x * gate`` rescaled by ``S_c 2**-F / S_dst`` with the two-word
  rounding of :func:`~haq_gym.export.dyadic.requantize_wide` (:class:`HardSwishOp`). A
  value that feeds a quantizer goes onto a fine scale ``2**-24``-ish below that grid's
  step, saturated a step outside the grid's range, then one :class:`RequantOp` onto the
  codes.
- **squeeze-excitation**: the depthwise output ``u`` on a fine scale; its global average
  pool is an int64 sum and one dyadic onto the first SE conv's grid; the channel product
  ``gate * u`` is an int64 multiply rescaled onto the projection's grid (:class:`MulOp`).

Every rounding is half to even and happens where the fake-quant model rounds; the fine
scales add a relative error near ``2**-24`` of a step, so a code can differ from the
fake-quant one only within about that distance of a rounding tie.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import numpy as np
import torch
from torch import nn

from haq_gym.export.dyadic import MAX_WIDE_SHIFT, WIDE_SPLIT, to_dyadic_array
from haq_gym.export.integer_model import (
    INT32_MAX,
    INT32_MIN,
    AddOp,
    HardSwishOp,
    IntegerModel,
    MulOp,
    PoolOp,
    Requant,
    RequantOp,
)
from haq_gym.quant.grid import QuantGrid
from haq_gym.quant.qlayers import QuantConv2d, QuantLinear

if TYPE_CHECKING:
    from haq_gym.export.build import _Exporter, _Unit

GATE_BITS = 24
"""Most fractional bits of a hard-sigmoid gate (its scale ``2**-GATE_BITS``, range ``[0, 2**GATE_BITS]``)."""
FINE_BITS = 24
"""Most fractional bits of a fine scale below the finest step that reads it."""
HEADROOM = 16.0
"""A fine scale's int32 range covers this many times the largest value on the calibration images."""


@dataclass
class _SqueezeExcitation:
    fc1: _Unit
    fc2: _Unit


@dataclass
class _Part:
    """One item of an inverted-residual block: a conv unit (with its module, for peaks) or a squeeze-excitation."""

    unit: _Unit | None
    module: nn.Module
    se: _SqueezeExcitation | None = None


@dataclass
class _V3Block:
    parts: list[_Part]
    residual: bool
    module: nn.Module


def _fine(step: float, peak: float, headroom: float = HEADROOM) -> QuantGrid:
    """``step / 2**F`` with ``F <= FINE_BITS`` as large as keeps ``headroom * peak`` inside int32."""
    frac = FINE_BITS
    while frac > 0 and headroom * peak / step * 2**frac >= 2**31:
        frac -= 1
    return QuantGrid(step=math.ldexp(step, -frac), qmin=INT32_MIN, qmax=INT32_MAX)


def _is_fine(grid: QuantGrid) -> bool:
    return (grid.qmin, grid.qmax) == (INT32_MIN, INT32_MAX)


def wide_dyadic(reals: np.ndarray, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Multipliers below 1 as ``(m, n)`` with ``31 <= n <= 93`` (what ``requantize_wide`` takes), int64 tensors.

    :func:`to_dyadic_array` strips trailing zero bits of ``m``; here they are put back
    where the shift would fall below 31 (the mantissa stays below ``2**31`` because the
    multiplier is below 1).
    """
    from haq_gym.export.build import ExportError

    values = np.asarray(reals, dtype=np.float64)
    if not bool(np.all(np.abs(values) < 1.0)):
        raise ExportError(f"{what}: a rescale multiplier is not below 1 ({float(np.abs(values).max()):.3g})")
    try:
        m, n = to_dyadic_array(values, MAX_WIDE_SHIFT)
    except ValueError as err:
        raise ExportError(f"{what}: {err}") from None
    low = n < WIDE_SPLIT
    m = np.where(low, m * np.left_shift(1, np.where(low, WIDE_SPLIT - n, 0)), m)
    n = np.where(low, WIDE_SPLIT, n)
    return torch.from_numpy(m.astype(np.int64)).reshape(-1), torch.from_numpy(n.astype(np.int64)).reshape(-1)


def hardswish_op(src: str, dst: str, scale: np.ndarray, step: float, lo: int, hi: int, what: str) -> HardSwishOp:
    """The :class:`HardSwishOp` ``dst = clamp(round(hardswish(scale_c * src) / step), lo, hi)``.

    ``scale``: the real value of one unit of the int32 ``src`` per channel (``[C]``);
    ``step``: the real value of one unit of ``dst``; ``lo, hi = INT32_MIN, INT32_MAX`` for
    a range-checked fine scale. The gate has :data:`GATE_BITS` fractional bits; its
    rescale ``scale_c 2**F / 6`` stays far below ``2**30`` (``|x * M| < 2**62``).
    """
    from haq_gym.export.build import ExportError

    scale = np.asarray(scale, dtype=np.float64).reshape(-1)
    gate_bits = GATE_BITS
    try:
        m, n = to_dyadic_array(scale * 2.0**gate_bits / 6.0)
    except ValueError as err:
        raise ExportError(f"{what} hard-sigmoid gate: {err}") from None
    gm, gn = torch.from_numpy(m), torch.from_numpy(n)
    half = 1 << (gate_bits - 1)
    om, on = wide_dyadic(scale * 2.0**-gate_bits / step, f"{what} hard-swish")
    return HardSwishOp(src, dst, Requant(gm, gn, -half, half), gate_bits, Requant(om, on, lo, hi))


class MobileNetV3Emitter:
    """Builds the integer ops of a quantized torchvision MobileNetV3 with the exporter's conv emission."""

    def __init__(self, exporter: _Exporter) -> None:
        self.ex = exporter

    # ------------------------------------------------------------------ structure
    def parse(self) -> tuple[_Unit, list[_V3Block], _Part, _Unit, _Unit]:
        """Stem unit, blocks, last conv (with its module), hidden linear (hard-swish) and classifier."""
        from haq_gym.export.build import ExportError

        ex = self.ex
        feats = list(cast(nn.Sequential, ex.model.features).children())
        stem = ex._unit_of(feats[0], "features.0")
        last = _Part(ex._unit_of(feats[-1], f"features.{len(feats) - 1}"), feats[-1])
        blocks: list[_V3Block] = []
        order = [stem.index]
        for i, block in enumerate(feats[1:-1], start=1):
            parts: list[_Part] = []
            for j, child in enumerate(cast(nn.Sequential, block.block).children()):
                where = f"features.{i}.block.{j}"
                if hasattr(child, "fc1") and hasattr(child, "scale_activation"):
                    parts.append(_Part(None, child, self._squeeze_excitation(child, where)))
                    order += [parts[-1].se.fc1.index, parts[-1].se.fc2.index]  # type: ignore[union-attr]
                else:
                    unit = ex._unit_of(child, where)
                    parts.append(_Part(unit, child))
                    order.append(unit.index)
            units = [p for p in parts if p.unit is not None]
            se_ok = all(
                0 < k < len(parts) - 1 and parts[k - 1].unit is not None and parts[k + 1].unit is not None
                for k, p in enumerate(parts)
                if p.se is not None
            )
            if not se_ok or len(units) < 2 or parts[-1].unit is None or parts[-1].unit.act != (-math.inf, math.inf):
                raise ExportError(
                    f"features.{i}: expected [expand,] depthwise, [SE,] and a projection without activation"
                )
            blocks.append(_V3Block(parts, bool(block.use_res_connect), block))
        order.append(last.unit.index)  # type: ignore[union-attr]
        head = [m for m in cast(nn.Sequential, ex.model.classifier).children() if not isinstance(m, nn.Dropout)]
        if not (
            len(head) == 3
            and isinstance(head[0], QuantLinear)
            and isinstance(head[1], nn.Hardswish)
            and isinstance(head[2], QuantLinear)
        ):
            raise ExportError("the MobileNetV3 classifier must be a quantized Linear, Hardswish, Dropout, Linear")
        hidden = ex._make_unit(head[0], None, head[1])
        classifier = ex._make_unit(head[2], None, None)
        order += [hidden.index, classifier.index]
        if order != list(range(len(ex.modules))):
            raise ExportError(
                f"the model's quantized layers ({len(ex.modules)}) do not match its MobileNetV3 structure "
                "in module order"
            )
        return stem, blocks, last, hidden, classifier

    def _squeeze_excitation(self, se: nn.Module, where: str) -> _SqueezeExcitation:
        from haq_gym.export.build import ExportError

        if not (
            isinstance(se.fc1, QuantConv2d)
            and isinstance(se.fc2, QuantConv2d)
            and isinstance(se.activation, nn.ReLU)
            and isinstance(se.scale_activation, nn.Hardsigmoid)
            and isinstance(se.avgpool, nn.AdaptiveAvgPool2d)
            and se.avgpool.output_size in (1, (1, 1))
        ):
            raise ExportError(
                f"{where}: squeeze-excitation must be global average pool, quantized 1x1 conv, ReLU, "
                "quantized 1x1 conv, Hardsigmoid"
            )
        return _SqueezeExcitation(
            self.ex._make_unit(se.fc1, None, se.activation), self.ex._make_unit(se.fc2, None, None)
        )

    # ------------------------------------------------------------------ the model
    def run(self) -> IntegerModel:
        """The whole network: stem, blocks (residual chains on fine scales as in MobileNetV2), last conv, head."""
        from haq_gym.export.build import input_grid_for

        ex = self.ex
        stem, blocks, last, hidden, classifier = self.parse()
        ex._check_bits()
        input_grid = input_grid_for(ex.modules, ex.images)
        x = ex._new(input_grid)
        input_name = x
        items: list[_Unit | _V3Block | _Part] = [stem, *blocks, last]
        firsts = [stem] + [next(p.unit for p in b.parts if p.unit is not None) for b in blocks] + [last.unit]
        in_grids = [input_grid] + [ex._in_grid(u) for u in firsts[1:]]  # type: ignore[arg-type]
        residual = [False] + [b.residual for b in blocks] + [False, False]
        features = cast(nn.Sequential, ex.model.features)
        outputs = [features[0]] + [b.module for b in blocks] + [features[-1]]
        chain = ex._chain_scales(in_grids, residual, outputs)
        se_modules = [p.module for b in blocks for p in b.parts if p.unit is not None and self._feeds_se(b, p)]
        self.peaks = ex._output_peaks(se_modules + [last.module])

        for i, item in enumerate(items):
            shortcut = x
            x = ex._to_codes(x, in_grids[i])
            if item is last:
                x = self._emit_pooled_last(last, x, hidden)
                continue
            dest = QuantGrid(step=chain[i], qmin=INT32_MIN, qmax=INT32_MAX) if i in chain else in_grids[i + 1]
            x = self._emit_block(item, x, dest) if isinstance(item, _V3Block) else self._emit_act(stem, x, dest)
            if residual[i]:
                total = ex._new(ex.grids[x])
                ex.ops.append(AddOp(shortcut, x, total))
                x = total
        h = self._emit_act(hidden, x, ex._in_grid(classifier))
        logits = ex._emit_conv(classifier, h, None)
        return ex._finish(input_grid, input_name, logits)

    @staticmethod
    def _feeds_se(block: _V3Block, part: _Part) -> bool:
        index = block.parts.index(part)
        return index + 1 < len(block.parts) and block.parts[index + 1].se is not None

    def _emit_block(self, block: _V3Block, x: str, dest: QuantGrid) -> str:
        """``[expand,] depthwise, [SE,] projection``; the projection writes ``dest`` (codes or a chain's fine scale)."""
        ex = self.ex
        parts = block.parts
        k = 0
        while k < len(parts):
            unit = parts[k].unit
            assert unit is not None  # parse() puts a unit before and after every squeeze-excitation
            if k + 1 == len(parts):
                x = ex._emit_conv(unit, x, dest)
                k += 1
            elif parts[k + 1].se is not None:
                se, project = parts[k + 1].se, parts[k + 2].unit
                assert se is not None and project is not None
                finest = min(ex._in_grid(se.fc1).step, ex._in_grid(project).step)
                u = self._emit_act(unit, x, _fine(finest, self.peaks[id(parts[k].module)]))
                x = self._emit_se(se, u, project, ex._pool_area_of(parts[k].module))
                k += 2
            else:
                nxt = parts[k + 1].unit
                assert nxt is not None
                x = self._emit_act(unit, x, ex._in_grid(nxt))
                k += 1
        return x

    # ------------------------------------------------------------------ non-linearities
    def _channel_scale(self, unit: _Unit, acc: str) -> np.ndarray:
        """``S_c``: the real value of one unit of the conv's int32 output ``(acc << k) + bias`` per channel."""
        bn = unit.bn
        step = self.ex.grids[acc].step
        if bn is None:
            return np.full(self.ex.int_layers[-1].codes.shape[0], step)  # the layer _emit_conv just appended
        var = cast(torch.Tensor, bn.running_var).double()  # _make_unit refuses a BatchNorm without statistics
        a = bn.weight.detach().double() if bn.affine else torch.ones_like(var)
        return cast(np.ndarray, (a / torch.sqrt(var + bn.eps)).numpy() * step)

    def _emit_act(self, unit: _Unit, src: str, dest: QuantGrid) -> str:
        """Conv/linear ``unit`` with its activation onto ``dest``: codes of a grid, or a fine scale (unclamped)."""
        ex = self.ex
        if not unit.hardswish:
            return ex._emit_conv(unit, src, dest)
        acc = ex._emit_conv(unit, src, None)
        scale = self._channel_scale(unit, acc)
        if _is_fine(dest):
            target, lo, hi = dest, INT32_MIN, INT32_MAX
        elif dest.offset == 0.0:  # straight onto the codes: one rounding, as in the fake-quant model
            codes = ex._new(dest)
            ex.ops.append(hardswish_op(acc, codes, scale, dest.step, dest.qmin, dest.qmax, f"layer {unit.name!r}"))
            return codes
        else:
            # An offset grid (LSQ+): the offset is not a whole number of product units in every
            # channel, so the value goes onto a fine scale first, saturated a step outside the
            # grid (the consumer's clamp makes those values equal), then one RequantOp.
            bottom = (dest.qmin - 1) * dest.step + dest.offset
            top = (dest.qmax + 1) * dest.step + dest.offset
            span = max(abs(bottom), abs(top)) + abs(dest.offset)
            frac = FINE_BITS
            while frac > 0 and span / dest.step * 2**frac >= 2**30:
                frac -= 1
            target = QuantGrid(step=math.ldexp(dest.step, -frac), qmin=INT32_MIN, qmax=INT32_MAX)
            lo, hi = math.floor(bottom / target.step), math.ceil(top / target.step)
        fine = ex._new(QuantGrid(step=target.step, qmin=lo, qmax=hi) if not _is_fine(dest) else target)
        ex.ops.append(hardswish_op(acc, fine, scale, target.step, lo, hi, f"layer {unit.name!r}"))
        if _is_fine(dest):
            return fine
        m, n = wide_dyadic(np.array([target.step / dest.step]), f"layer {unit.name!r} requantisation")
        codes = ex._new(dest)
        add = -int(np.rint(dest.offset / target.step))
        ex.ops.append(RequantOp(fine, codes, add, Requant(m, n, dest.qmin, dest.qmax)))
        return codes

    def _emit_pool(self, src: str, area: int, dest: QuantGrid, what: str, keepdim: bool) -> str:
        """Global average pool of a fine-scale tensor: int64 sum, minus the offset, one dyadic onto ``dest``."""
        scale = self.ex.grids[src].step
        m, n = wide_dyadic(np.array([scale / (area * dest.step)]), f"{what} average pool")
        dst = self.ex._new(dest)
        add = -int(np.rint(area * dest.offset / scale))
        self.ex.ops.append(PoolOp(src, dst, add, Requant(m, n, dest.qmin, dest.qmax), keepdim))
        return dst

    def _emit_se(self, se: _SqueezeExcitation, u: str, project: _Unit, area: int) -> str:
        """SE: ``u`` pooled onto fc1's grid, fc1 + ReLU, fc2 + hard-sigmoid (the gate), ``gate * u`` projected."""
        from haq_gym.export.build import ExportError

        ex = self.ex
        pooled = self._emit_pool(u, area, ex._in_grid(se.fc1), se.fc1.name, keepdim=True)
        hidden = ex._emit_conv(se.fc1, pooled, ex._in_grid(se.fc2))
        bits = GATE_BITS
        gate_grid = QuantGrid(step=6.0 * 2.0**-bits, qmin=0, qmax=2**bits, offset=-3.0)
        gate = ex._emit_conv(se.fc2, hidden, gate_grid, act=(-3.0, 3.0))
        out = ex._in_grid(project)
        u_step = ex.grids[u].step
        m, n = wide_dyadic(np.array([u_step * 2.0**-bits / out.step]), f"layer {project.name!r} squeeze-excitation")
        add = -int(np.rint(out.offset / (u_step * 2.0**-bits)))
        if abs(add) >= 2**61:
            raise ExportError(f"layer {project.name!r}: its input offset does not fit the squeeze-excitation product")
        dst = ex._new(out)
        ex.ops.append(MulOp(u, gate, dst, add, Requant(m, n, out.qmin, out.qmax)))
        return dst

    def _emit_pooled_last(self, last: _Part, src: str, hidden: _Unit) -> str:
        """Last conv + hard-swish onto a fine scale below the hidden linear's step, then the pool onto its grid."""
        assert last.unit is not None
        dest = self.ex._in_grid(hidden)
        fine = _fine(dest.step, self.peaks[id(last.module)])
        x = self._emit_act(last.unit, src, fine)
        return self._emit_pool(x, self.ex._pool_area_of(last.module), dest, last.unit.name, keepdim=False)
