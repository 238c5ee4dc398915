"""Export a quantized network (fake-quant model, any policy, any quantizer with ``grid()``) to an :class:`IntegerModel`.

The exporter only asks each quantizer for its integer grid (``grid()``, see
:class:`~haq_gym.quant.grid.QuantGrid`) and for the fake-quantized weight (the
quantizer's own forward), from which it reads the integer weight codes back; so HAQ's
linear quantizers, LSQ, LSQ+ and power-of-two LSQ export the same way. The arithmetic
(see ``docs/integer_export.md``):

- Conv + BatchNorm + activation, input codes ``q`` (step ``s_x``, LSQ+ offset ``beta``),
  weight codes ``W`` (step ``s_w``), BN ``a_c = gamma_c / sqrt(var_c + eps)``,
  ``d_c = beta_c - a_c * mean_c``, conv bias ``b_c``, output grid (step ``T``, offset
  ``beta_o``): ``(y - beta_o) / T = M_c * (acc + B_c)`` with ``M_c = a_c s_w s_x / T``
  and ``B_c = (b_c + (d_c - beta_o) / a_c) / (s_w s_x)`` (plus the input-offset term).
  Stored: ``bias = round(2**k * B_c)`` (int32, accumulator scale with ``k`` fractional
  bits, ``k`` per layer, as large as the worst-case accumulator leaves room for in int32,
  at most 16) and ``M_c / 2**k`` as a dyadic ``m_c * 2**-n_c``. ``gamma_c < 0`` gives a
  negative ``m_c``. The activation is the clamp ``[round((lo - beta_o)/T), round((hi -
  beta_o)/T)]`` (``round`` is monotone, so clamping before or after rounding agree),
  intersected with the output grid's ``[qmin, qmax]``.
- Residual blocks: the fake-quant model adds the *unquantized* block input to the
  projection output, so the integer model keeps each residual chain (a stage's first
  block output and the blocks adding to it) as int32 on one fine scale
  ``S = min(step of the chain's consumers) / 2**F``: every projection is requantised
  onto ``S``, the add is a plain int32 add, and each consumer requantises ``S`` to its own
  grid. ``F`` (at most 24) leaves int32 room for 16 times the chain's largest value on
  the calibration images. Codes differ from the fake-quant path only where a value lies
  within about ``2**-F`` steps of a rounding tie.
- Global average pooling: the last conv's ReLU6 output on a fine scale
  ``S_p = s_cls / 2**F`` (``F <= 16``), clamped where a single value already saturates the
  mean, an integer sum over ``H*W``, and one dyadic ``S_p / (H*W*s_cls)`` onto the
  classifier's input grid.
- Classifier: int32 logits ``(acc << k) + bias``; the predicted class is their argmax.
- Model input: the first layer is ``[8, -1]`` (its input unquantized) in HAQ's policies,
  but integer inference needs integer input, so the image is quantized once at the
  boundary onto a signed 8-bit grid ``[-127, 127]`` with ``step = max|x| / 127`` over the
  calibration images (a power of two, rounded up, when every other grid is one). The
  fake-quant reference of :mod:`haq_gym.export.compare` quantizes its input the same way.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch import nn

from haq_gym.export.bitpack import value_range
from haq_gym.export.dyadic import to_dyadic, to_dyadic_array
from haq_gym.export.integer_model import (
    INT32_MAX,
    INT32_MIN,
    AddOp,
    ConvOp,
    IntegerLayer,
    IntegerModel,
    Op,
    PoolOp,
    ReluOp,
    Requant,
    RequantOp,
    ShortcutOp,
)
from haq_gym.quant.grid import QuantGrid
from haq_gym.quant.log_quantizer import LogWeightQuantizer, log8_to_linear
from haq_gym.quant.qlayers import QuantConv2d, QuantLayerMixin, QuantLinear

if TYPE_CHECKING:
    from tqdm import tqdm

FINE_FRACTION_BITS = 16
"""Fractional bits of the pooling's fine int32 scale below the classifier's input step (fewer if int32 needs)."""
MAX_CHAIN_FRACTION_BITS = 24
"""Most fractional bits of a residual chain's fine scale below its finest consumer step."""
CHAIN_HEADROOM = 16.0
"""A residual chain's int32 range covers this many times its largest value on the calibration images."""
MAX_BIAS_SHIFT = 16
"""Most fractional bits an int32 bias gets below the accumulator scale."""
INPUT_BITS = 8
WEIGHT_CODE_TOLERANCE = 1e-3
"""How far (in steps) a fake-quantized weight may sit from an integer before export refuses it."""


class ExportError(ValueError):
    """The model cannot be exported to integer form as it is (the message says why and where)."""


SUPPORTED_ARCHITECTURES = (
    "mobilenetv2 (torchvision MobileNetV2)",
    "mobilenetv3small (torchvision MobileNetV3: hard-swish, hard-sigmoid, squeeze-excitation)",
    "resnet20 (CIFAR ResNet, option-A shortcuts)",
    "resnet18 (torchvision ResNet of basic blocks, 1x1 projection shortcuts)",
)
"""What the integer exporter handles; anything else is refused before any work."""


def architecture_of(model: nn.Module) -> str:
    """``"mobilenetv2"``, ``"mobilenetv3"``, ``"cifar-resnet"`` or ``"torchvision-resnet"``; :class:`ExportError` else.

    Cheap (looks at the module types only), so commands call it before calibrating or
    evaluating anything.
    """
    from haq_gym.models.resnet import CifarBasicBlock, CifarResNet

    name = type(model).__name__
    if isinstance(model, CifarResNet) and all(
        isinstance(b, CifarBasicBlock) for s in (model.layer1, model.layer2, model.layer3) for b in s
    ):
        return "cifar-resnet"
    if name == "ResNet" and all(hasattr(model, a) for a in ("conv1", "bn1", "layer1", "layer4", "fc")):
        resnet: Any = model  # torchvision's ResNet (untyped): its attributes were checked just above
        blocks = [b for s in (resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4) for b in s]
        if all(type(b).__name__ == "BasicBlock" for b in blocks):
            if not isinstance(resnet.maxpool, nn.Identity):
                raise ExportError(
                    "integer export supports ResNets without the stem max-pool (the CIFAR stem); "
                    "this one has a max-pool"
                )
            return "torchvision-resnet"
    features = getattr(model, "features", None)
    if (
        isinstance(features, nn.Sequential)
        and isinstance(getattr(model, "classifier", None), nn.Sequential)
        and all(hasattr(b, "conv") and hasattr(b, "use_res_connect") for b in list(features)[1:-1])
    ):
        return "mobilenetv2"
    if (
        isinstance(features, nn.Sequential)
        and isinstance(getattr(model, "classifier", None), nn.Sequential)
        and all(hasattr(b, "block") and hasattr(b, "use_res_connect") for b in list(features)[1:-1])
    ):
        return "mobilenetv3"
    raise ExportError(f"integer export does not support {name}; supported: {'; '.join(SUPPORTED_ARCHITECTURES)}")


@dataclass
class _Unit:
    """One quantized conv/linear with what follows it up to the next quantizer."""

    index: int
    name: str
    layer: QuantLayerMixin
    bn: nn.BatchNorm2d | None
    act: tuple[float, float]
    hardswish: bool = False


@dataclass
class _Block:
    units: list[_Unit]
    residual: bool
    module: nn.Module


def export_integer_model(
    model: nn.Module,
    layers: Sequence[tuple[str, QuantLayerMixin]],
    calibration_images: torch.Tensor,
    *,
    bias_shift: int | None = None,
    meta: dict[str, Any] | None = None,
    progress: bool = False,
) -> IntegerModel:
    """Build the integer model of a quantized torchvision MobileNetV2.

    ``layers``: the model's ``(name, wrapper)`` pairs in module order (``wrap_model``'s
    result), every one with weight bits in 2..8 and, except the first, input bits set;
    quantizers calibrated (or trained). ``calibration_images [N, 3, H, W]`` fix the input
    boundary's step and the image size. ``bias_shift`` forces the bias's fractional bits
    on every layer (0 = the usual int32 bias at the accumulator scale); ``None`` takes as
    many as int32 allows (at most 16). Raises :class:`ExportError` naming the layer when
    something has no integer form. ``progress`` shows a bar over the layers.
    """
    from tqdm import tqdm

    architecture_of(model)
    was_training = model.training
    model.eval()
    with tqdm(
        total=len(layers), desc="building the integer model", unit="layer", disable=not progress, leave=False
    ) as bar:
        try:
            with torch.no_grad():
                return _Exporter(model, layers, calibration_images, bias_shift, meta or {}, bar).run()
        finally:
            model.train(was_training)


def weight_codes(name: str, layer: QuantLayerMixin) -> tuple[torch.Tensor, float]:
    """The layer's integer weight codes (int32, the weight's shape) and step, read back from its quantizer's forward.

    Linear grids only (a log8 layer has no uniform step); :class:`ExportError` if the
    fake-quantized weight is off the grid the quantizer reports or outside its bits.
    """
    bits, wq = layer.w_bit, layer.weight_quantizer
    if isinstance(wq, LogWeightQuantizer):
        raise ExportError(f"layer {name!r}: log8 weights have no uniform grid (the packed .hqpk format holds them)")
    grid = wq.grid(layer.weight)
    if grid.offset != 0.0:
        raise ExportError(f"layer {name!r}: weight grids with an offset are not supported")
    fq = wq(layer.weight).detach().double()
    scaled = fq / grid.step
    codes = torch.round(scaled)
    worst = float((scaled - codes).abs().max()) if codes.numel() else 0.0
    if worst > WEIGHT_CODE_TOLERANCE:
        raise ExportError(
            f"layer {name!r}: the quantized weight is {worst:.3g} steps off its grid "
            f"(step {grid.step!r}); the quantizer's grid() disagrees with its forward"
        )
    lo, hi = value_range(bits, True)
    if grid.qmin < lo or grid.qmax > hi or codes.min() < grid.qmin or codes.max() > grid.qmax:
        raise ExportError(
            f"layer {name!r}: weight codes span [{int(codes.min())}, {int(codes.max())}] on grid "
            f"[{grid.qmin}, {grid.qmax}], which does not fit {bits} signed bits [{lo}, {hi}]"
        )
    return codes.to(torch.int32), grid.step


def input_grid_for(layers: Sequence[QuantLayerMixin], images: torch.Tensor) -> QuantGrid:
    """The grid of the model's input: the first layer's own input quantizer, else signed 8-bit at ``max|x| / 127``.

    The step is rounded up to a power of two when every other grid already is one, so
    a power-of-two model stays shift-only.
    """
    first = layers[0]
    if first.a_bit != -1:
        return first.input_quantizer.grid()
    amax = float(images.abs().max())
    if not amax > 0:
        raise ExportError("calibration images are all zero; cannot choose the input step")
    qmax = 2 ** (INPUT_BITS - 1) - 1
    step = amax / qmax
    if all(_grids_pot(layer) for layer in layers[1:]):
        step = 2.0 ** math.ceil(math.log2(step))
    return QuantGrid(step=step, qmin=-qmax, qmax=qmax)


def _running_stats(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """``bn``'s running mean and variance, which folding needs (a BatchNorm may be built without them)."""
    if bn.running_mean is None or bn.running_var is None:
        raise ExportError("a BatchNorm without running statistics (track_running_stats=False) cannot be folded")
    return bn.running_mean, bn.running_var


def _grids_pot(layer: QuantLayerMixin) -> bool:
    wq = layer.weight_quantizer
    if isinstance(wq, LogWeightQuantizer):
        return False
    return wq.grid(layer.weight).power_of_two and (layer.a_bit == -1 or layer.input_quantizer.grid().power_of_two)


class _Exporter:
    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[tuple[str, QuantLayerMixin]],
        images: torch.Tensor,
        bias_shift: int | None,
        meta: dict[str, Any],
        bar: tqdm[Any] | None = None,
    ) -> None:
        self.bar = bar
        self.model = model
        self.names = [n for n, _ in layers]
        self.modules = [m for _, m in layers]
        self.index = {id(m): i for i, m in enumerate(self.modules)}
        self.images = images
        self.forced_shift = bias_shift
        self.meta = meta
        self.ops: list[Op] = []
        self.grids: dict[str, QuantGrid] = {}
        self.layer_inputs: dict[str, str] = {}
        self.int_layers: list[IntegerLayer] = []
        self._count = 0

    # ------------------------------------------------------------------ structure
    def _parse(self) -> tuple[_Unit, list[_Block], _Unit, _Unit]:
        model = self.model
        features, classifier_seq = getattr(model, "features", None), getattr(model, "classifier", None)
        if not (isinstance(features, nn.Sequential) and isinstance(classifier_seq, nn.Sequential)):
            raise ExportError(
                f"integer export supports torchvision's MobileNetV2 (features, global average pool, "
                f"classifier); got {type(model).__name__}"
            )
        feats = list(features.children())
        stem = self._unit_of(feats[0], "features.0")
        last = self._unit_of(feats[-1], f"features.{len(feats) - 1}")
        blocks = []
        for i, block in enumerate(feats[1:-1], start=1):
            if not (hasattr(block, "conv") and hasattr(block, "use_res_connect")):
                raise ExportError(f"features.{i} is a {type(block).__name__}, expected an InvertedResidual block")
            blocks.append(
                _Block(
                    self._units_of_sequence(list(cast(nn.Module, block.conv).children()), f"features.{i}.conv"),
                    bool(block.use_res_connect),
                    block,
                )
            )
        head = [m for m in classifier_seq.children() if not isinstance(m, nn.Dropout)]
        if len(head) != 1 or not isinstance(head[0], QuantLinear):
            raise ExportError("the classifier must be Dropout + one quantized Linear")
        classifier = self._make_unit(head[0], None, None)
        seen = [u.index for u in [stem, *[u for b in blocks for u in b.units], last, classifier]]
        if seen != list(range(len(self.modules))):
            raise ExportError(
                f"the model's quantized layers ({len(self.modules)}) do not match its MobileNetV2 "
                "structure in module order"
            )
        return stem, blocks, last, classifier

    def _unit_of(self, module: nn.Module, where: str) -> _Unit:
        units = self._units_of_sequence(list(module.children()), where)
        if len(units) != 1:
            raise ExportError(f"{where}: expected one conv unit, found {len(units)}")
        return units[0]

    def _units_of_sequence(self, children: list[nn.Module], where: str) -> list[_Unit]:
        """Split ``[conv, bn?, act?, ...]`` (nested Sequentials flattened) into units."""
        flat: list[nn.Module] = []
        for child in children:
            flat.extend(child.children() if isinstance(child, nn.Sequential) else [child])
        units: list[_Unit] = []
        i = 0
        while i < len(flat):
            conv = flat[i]
            if not isinstance(conv, QuantConv2d):
                raise ExportError(f"{where}: expected a quantized conv, found {type(conv).__name__}")
            bn: nn.BatchNorm2d | None = None
            act: nn.Module | None = None
            i += 1
            if i < len(flat) and isinstance(flat[i], (nn.BatchNorm2d, nn.Identity)):
                norm = flat[i]
                bn = norm if isinstance(norm, nn.BatchNorm2d) else None
                i += 1
            if i < len(flat) and not isinstance(flat[i], QuantConv2d):
                act = flat[i]
                i += 1
            units.append(self._make_unit(conv, bn, act))
        return units

    def _make_unit(self, layer: QuantLayerMixin, bn: nn.BatchNorm2d | None, act: nn.Module | None) -> _Unit:
        if id(layer) not in self.index:
            raise ExportError(f"a {type(layer).__name__} of the model is not in the given layer list")
        i = self.index[id(layer)]
        hardswish = isinstance(act, nn.Hardswish)
        if isinstance(act, nn.Hardtanh):  # ReLU6 is a Hardtanh(0, 6)
            bounds = (float(act.min_val), float(act.max_val))
        elif hardswish:  # MobileNetV3: its own op (haq_gym.export.mobilenetv3)
            bounds = (-math.inf, math.inf)
        elif isinstance(act, nn.ReLU):
            bounds = (0.0, math.inf)
        elif act is None or isinstance(act, nn.Identity):
            bounds = (-math.inf, math.inf)
        else:
            raise ExportError(
                f"layer {self.names[i]!r} is followed by {type(act).__name__}, which has no integer "
                "form here (supported: ReLU, ReLU6/Hardtanh, Hardswish, none)"
            )
        if bn is not None and (bn.running_mean is None or bn.running_var is None):
            raise ExportError(f"layer {self.names[i]!r}: its BatchNorm has no running statistics to fold")
        return _Unit(i, self.names[i], layer, bn, bounds, hardswish)

    # ------------------------------------------------------------------ grids and weights
    def _check_bits(self) -> None:
        """Refuse what has no integer form before any grid is computed (which can be slow)."""
        for i, (name, layer) in enumerate(zip(self.names, self.modules, strict=True)):
            if layer.w_bit == -1:
                raise ExportError(f"layer {name!r} has unquantized weights (w_bit -1); integer export needs 2..8 bits")
            if not 2 <= layer.w_bit <= 8:
                raise ExportError(f"layer {name!r} has {layer.w_bit}-bit weights; the packed format stores 2..8 bits")
            if i > 0 and layer.a_bit == -1:
                raise ExportError(
                    f"layer {name!r} has an unquantized input (a_bit -1); integer inference needs "
                    "every layer's input quantized (only the first layer's may be -1)"
                )

    def _in_grid(self, unit: _Unit) -> QuantGrid:
        return unit.layer.input_quantizer.grid()

    def _weights(self, unit: _Unit, src_grid: QuantGrid) -> IntegerLayer:
        layer, name = unit.layer, unit.name
        bits = layer.w_bit
        wq = layer.weight_quantizer
        if isinstance(wq, LogWeightQuantizer):
            codes, log_max = wq.log_codes(layer.weight)
            frac = self._log_linear_bits(layer, codes, log_max, src_grid)
            lin, step = log8_to_linear(codes, log_max, frac)
            return IntegerLayer(
                name, codes, 8, False, step, fmt="log8", log_max=log_max, log_frac_bits=frac, linear_codes=lin
            )
        codes, step = weight_codes(name, layer)
        return IntegerLayer(name, codes, bits, True, step)

    def _log_linear_bits(self, layer: QuantLayerMixin, codes: torch.Tensor, log_max: int, src: QuantGrid) -> int:
        """Largest fractional precision (8..14 bits) whose worst-case accumulator stays below 2**30."""
        for bits in range(14, 7, -1):
            lin, _ = log8_to_linear(codes, log_max, bits)
            if _acc_bound(lin, src) < 2**30:
                return bits
        raise ExportError(
            f"layer {self.names[self.index[id(layer)]]!r}: log8 weights overflow an int32 accumulator "
            "even at 8 fractional bits"
        )

    # ------------------------------------------------------------------ emission
    def _new(self, grid: QuantGrid) -> str:
        name = f"t{self._count}"
        self._count += 1
        self.grids[name] = grid
        return name

    def _emit_conv(
        self, unit: _Unit, src: str, target: QuantGrid | None, act: tuple[float, float] | None = None
    ) -> str:
        """Append the ConvOp of ``unit`` reading ``src``; ``target=None`` means int32 logits.

        ``act`` overrides the real clamp range of the unit's activation.
        """
        if unit.hardswish and target is not None:
            raise ExportError(f"layer {unit.name!r}: its hard-swish needs the MobileNetV3 exporter's HardSwishOp")
        src_grid = self.grids[src]
        self.layer_inputs[unit.name] = src
        wl = self._weights(unit, src_grid)
        self.int_layers.append(wl)
        if self.bar is not None:
            self.bar.update(1)
        try:
            folded = fold_conv(
                wl.engine_codes,
                wl.step,
                src_grid,
                target,
                bn=unit.bn,
                conv_bias=cast("torch.Tensor | None", unit.layer.bias),
                act=unit.act if act is None else act,
                bias_shift=self.forced_shift,
            )
        except ExportError as err:
            raise ExportError(f"layer {unit.name!r}: {err}") from None
        dst = self._new(folded.output_grid)
        kind = "linear" if isinstance(unit.layer, QuantLinear) else "conv"
        self.ops.append(
            ConvOp(
                kind,
                len(self.int_layers) - 1,
                src,
                dst,
                folded.bias,
                folded.bias_shift,
                folded.requant,
                input_offset=folded.input_offset,
                **({} if kind == "linear" else self._conv_geometry(unit, cast(nn.Conv2d, unit.layer))),
            )
        )
        return dst

    @staticmethod
    def _conv_geometry(unit: _Unit, conv: nn.Conv2d) -> dict[str, Any]:
        square = (
            conv.stride[0] == conv.stride[1]
            and conv.kernel_size[0] == conv.kernel_size[1]
            and conv.dilation == (1, 1)
            and isinstance(conv.padding, tuple)
            and conv.padding[0] == conv.padding[1]
            and conv.padding_mode == "zeros"
        )
        if not square:
            raise ExportError(
                f"layer {unit.name!r}: only square kernels, strides and zero padding without dilation are supported"
            )
        return {"stride": conv.stride[0], "padding": conv.padding[0], "groups": conv.groups}

    def _to_codes(self, src: str, grid: QuantGrid) -> str:
        """``src`` as codes on ``grid``: itself if it already is, else a RequantOp from its fine scale."""
        have = self.grids[src]
        if have == grid:
            return src
        if (have.qmin, have.qmax) != (INT32_MIN, INT32_MAX):
            raise ExportError(f"tensor {src} holds codes on {have}, but its consumer expects {grid}")
        m, n = to_dyadic(have.step / grid.step)
        add = -int(np.rint(grid.offset / have.step))
        dst = self._new(grid)
        self.ops.append(RequantOp(src, dst, add, Requant(torch.tensor([m]), torch.tensor([n]), grid.qmin, grid.qmax)))
        return dst

    # ------------------------------------------------------------------ the model
    def run(self) -> IntegerModel:
        architecture = architecture_of(self.model)
        if architecture == "mobilenetv3":
            from haq_gym.export.mobilenetv3 import MobileNetV3Emitter

            return MobileNetV3Emitter(self).run()
        if architecture != "mobilenetv2":
            return self._run_resnet()
        stem, blocks, last, classifier = self._parse()
        self._check_bits()
        input_grid = input_grid_for(self.modules, self.images)
        x = self._new(input_grid)
        input_name = x

        items: list[_Unit | _Block] = [stem, *blocks, last]
        first = [it if isinstance(it, _Unit) else it.units[0] for it in items]
        in_grids = [input_grid] + [self._in_grid(u) for u in first[1:]]
        residual = [isinstance(it, _Block) and it.residual for it in items] + [False]
        if residual[0]:
            raise ExportError("the first block cannot be residual")
        features = cast(nn.Sequential, self.model.features)  # checked by _parse
        outputs = [features[0]] + [b.module for b in blocks] + [features[-1]]
        fine = self._chain_scales(in_grids, residual, outputs)

        for i, item in enumerate(items):
            shortcut = x  # the fine-scale chain value, if item i is residual
            x = self._to_codes(x, in_grids[i])
            units = [item] if isinstance(item, _Unit) else item.units
            for j, unit in enumerate(units):
                if j + 1 < len(units):
                    x = self._emit_conv(unit, x, self._in_grid(units[j + 1]))
                elif item is last:
                    x = self._emit_pool(unit, x, classifier)
                elif i in fine:
                    x = self._emit_conv(unit, x, QuantGrid(step=fine[i], qmin=INT32_MIN, qmax=INT32_MAX))
                else:
                    x = self._emit_conv(unit, x, in_grids[i + 1])
            if residual[i]:
                dst = self._new(self.grids[x])
                self.ops.append(AddOp(shortcut, x, dst))
                x = dst
        logits = self._emit_conv(classifier, x, None)
        return self._finish(input_grid, input_name, logits)

    def _finish(self, input_grid: QuantGrid, input_name: str, logits: str) -> IntegerModel:
        out_step = self.grids[logits].step
        pot_ops = sum(
            1
            for op in self.ops
            if isinstance(op, (ConvOp, RequantOp, PoolOp)) and op.requant is not None and op.requant.is_shift
        )
        meta = dict(
            self.meta,
            image_size=list(self.images.shape[1:]),
            shift_only_requants=pot_ops,
            requants=sum(1 for op in self.ops if getattr(op, "requant", None) is not None),
        )
        return IntegerModel(
            input_grid, self.int_layers, self.ops, self.grids, self.layer_inputs, input_name, logits, out_step, meta
        )

    # ------------------------------------------------------------------ ResNets
    def _resnet_blocks(self) -> tuple[_Unit, list[dict[str, Any]], _Unit]:
        """Stem unit, one dict per basic block (units, shortcut kind), classifier; checked against module order."""
        model: Any = self.model  # a CIFAR or torchvision ResNet: architecture_of checked its attributes
        cifar = architecture_of(model) == "cifar-resnet"
        stages = (
            (model.layer1, model.layer2, model.layer3)
            if cifar
            else (model.layer1, model.layer2, model.layer3, model.layer4)
        )
        relu = nn.ReLU()
        stem = self._make_unit(model.conv1, model.bn1, relu)
        blocks, order = [], [stem.index]
        for s, stage in enumerate(stages, start=1):
            for b, block in enumerate(stage):
                c1 = self._make_unit(block.conv1, block.bn1, relu)
                c2 = self._make_unit(block.conv2, block.bn2, None)
                info = {"units": (c1, c2), "module": block, "where": f"layer{s}.{b}"}
                if cifar:
                    if block.stride != 1 or block.extra_channels != 0:
                        front = block.extra_channels // 2
                        info["option_a"] = (block.stride, front, block.extra_channels - front)
                    order += [c1.index, c2.index]
                elif block.downsample is not None:
                    down = list(block.downsample.children())
                    if not (
                        len(down) == 2 and isinstance(down[0], QuantConv2d) and isinstance(down[1], nn.BatchNorm2d)
                    ):
                        raise ExportError(f"layer{s}.{b}.downsample: expected a quantized 1x1 conv and BatchNorm")
                    info["projection"] = self._make_unit(down[0], down[1], None)
                    order += [c1.index, c2.index, info["projection"].index]
                else:
                    order += [c1.index, c2.index]
                blocks.append(info)
        fc = model.fc
        if not isinstance(fc, QuantLinear):
            raise ExportError("the ResNet's fc must be a quantized Linear")
        classifier = self._make_unit(fc, None, None)
        order.append(classifier.index)
        if order != list(range(len(self.modules))):
            raise ExportError(
                f"the model's quantized layers ({len(self.modules)}) do not match its ResNet structure in module order"
            )
        return stem, blocks, classifier

    def _run_resnet(self) -> IntegerModel:
        """A ResNet as one residual chain on a fine int32 scale (docs/integer_export.md, 1.3b).

        The fake-quant block adds the *unquantized* block input to the second conv's
        output, so every block output stays int32 on one fine scale ``S``: the stem, each
        second conv and each projection shortcut requantise onto ``S``, option-A
        shortcuts subsample and zero-pad it, the add is a plain int32 add, the ReLU a
        clamp at 0; each block's first conv and projection requantise ``S`` onto their
        own grids, and the pooling reads ``S`` through a saturating fine scale.
        """
        stem, blocks, classifier = self._resnet_blocks()
        self._check_bits()
        input_grid = input_grid_for(self.modules, self.images)
        x = self._new(input_grid)
        input_name = x
        consumers = [self._in_grid(b["units"][0]) for b in blocks]
        consumers += [self._in_grid(b["projection"]) for b in blocks if "projection" in b]
        consumers.append(self._in_grid(classifier))
        finest = min(g.step for g in consumers)
        watched = [
            self.model.bn1,
            *[b["module"] for b in blocks],
            *[b["module"].bn2 for b in blocks],
            *[b["projection"].bn for b in blocks if "projection" in b],
        ]
        peaks = self._output_peaks(watched)
        peak = max(peaks.values())
        frac = MAX_CHAIN_FRACTION_BITS
        while frac > 0 and CHAIN_HEADROOM * peak / finest * 2**frac >= 2**31:
            frac -= 1
        fine = QuantGrid(step=math.ldexp(finest, -frac), qmin=INT32_MIN, qmax=INT32_MAX)

        x = self._emit_conv(stem, x, fine)  # ReLU: the requant's clamp at 0
        for block in blocks:
            c1, c2 = block["units"]
            h = self._emit_conv(c1, self._to_codes(x, self._in_grid(c1)), self._in_grid(c2))
            h = self._emit_conv(c2, h, fine)
            if "projection" in block:
                proj = block["projection"]
                sc = self._emit_conv(proj, self._to_codes(x, self._in_grid(proj)), fine)
            elif "option_a" in block:
                stride, front, back = block["option_a"]
                sc = self._new(fine)
                self.ops.append(ShortcutOp(x, sc, stride, front, back))
            else:
                sc = x
            total = self._new(fine)
            self.ops.append(AddOp(h, sc, total))
            x = self._new(fine)
            self.ops.append(ReluOp(total, x))
        x = self._emit_pool_of_fine(x, classifier, blocks[-1]["module"])
        logits = self._emit_conv(classifier, x, None)
        return self._finish(input_grid, input_name, logits)

    def _emit_pool_of_fine(self, src: str, classifier: _Unit, last: nn.Module) -> str:
        """Global average pooling of a non-negative fine-scale tensor onto the classifier's input grid.

        One requantisation onto the pooling scale ``S_p = s_cls / 2**F`` clamped where a
        single value alone saturates the mean (as in :meth:`_emit_pool`), then the sum.
        """
        g = self._in_grid(classifier)
        area = self._pool_area_of(last)
        top = area * ((g.qmax + 1) * g.step + g.offset)
        if not top > 0:
            raise ExportError(
                f"layer {classifier.name!r}: its input grid {g} lies below zero; the pooled ReLU "
                "output has no integer form here"
            )
        frac = FINE_FRACTION_BITS
        while frac > 0 and area * top * 2**frac / g.step >= 2**30:
            frac -= 1
        scale = math.ldexp(g.step, -frac)
        top_code = math.ceil(top / scale)
        m, n = to_dyadic(self.grids[src].step / scale)
        pooled_in = self._new(QuantGrid(step=scale, qmin=0, qmax=top_code))
        self.ops.append(RequantOp(src, pooled_in, 0, Requant(torch.tensor([m]), torch.tensor([n]), 0, top_code)))
        m, n = to_dyadic(scale / (area * g.step))
        add = -int(np.rint(area * g.offset / scale))
        dst = self._new(g)
        self.ops.append(PoolOp(pooled_in, dst, add, Requant(torch.tensor([m]), torch.tensor([n]), g.qmin, g.qmax)))
        return dst

    def _pool_area_of(self, module: nn.Module) -> int:
        """``H * W`` of ``module``'s output for the calibration image size (one shape-only float pass)."""
        shapes = []
        handle = module.register_forward_hook(lambda m, i, o: shapes.append(o.shape))
        try:
            self.model(self.images[:1])
        finally:
            handle.remove()
        return int(shapes[0][2] * shapes[0][3])

    def _chain_scales(
        self, in_grids: list[QuantGrid], residual: list[bool], outputs: list[nn.Module]
    ) -> dict[int, float]:
        """Fine scale of each item whose output feeds a residual chain: ``min(consumer steps) / 2**F``.

        ``F`` is as large as int32 allows for :data:`CHAIN_HEADROOM` times the chain's
        largest magnitude on the calibration images (one float pass), at most
        :data:`MAX_CHAIN_FRACTION_BITS`; values beyond it raise at inference, never wrap.
        """
        chains = []
        i = 0
        while i < len(residual) - 1:
            if residual[i + 1]:
                j = i + 1
                while residual[j]:
                    j += 1
                chains.append((i, j))
                i = j
            else:
                i += 1
        if not chains:
            return {}
        peaks = self._output_peaks([outputs[k] for i, j in chains for k in range(i, j)])
        fine: dict[int, float] = {}
        for i, j in chains:
            finest = min(g.step for g in in_grids[i + 1 : j + 1])
            peak = max(peaks[id(outputs[k])] for k in range(i, j))
            frac = MAX_CHAIN_FRACTION_BITS
            while frac > 0 and CHAIN_HEADROOM * peak / finest * 2**frac >= 2**31:
                frac -= 1
            for k in range(i, j):
                fine[k] = math.ldexp(finest, -frac)
        return fine

    def _output_peaks(self, modules: list[nn.Module]) -> dict[int, float]:
        """``max |output|`` of each module over the calibration images."""
        peaks: dict[int, float] = {}
        hooks = [
            m.register_forward_hook(
                lambda mod, i, o: peaks.__setitem__(
                    id(mod), max(peaks.get(id(mod), 0.0), float(o.detach().abs().max()))
                )
            )
            for m in modules
        ]
        try:
            self.model(self.images)
        finally:
            for h in hooks:
                h.remove()
        return peaks

    def _emit_pool(self, unit: _Unit, src: str, classifier: _Unit) -> str:
        """Last conv onto a fine scale (its ReLU6 as a clamp), then the pooled sum onto the classifier's grid.

        With a non-negative activation, a value ``v >= H*W*((qmax+1)*s + offset)`` alone
        puts the mean above the grid's top, so clamping every value there leaves the
        pooled code unchanged; that clamp bounds the int32 sum whatever the step.
        """
        g = self._in_grid(classifier)
        area = self._pool_area(unit)
        low, top = unit.act
        saturating = area * ((g.qmax + 1) * g.step + g.offset)
        if low >= 0 and saturating > 0:
            top = min(top, saturating)
        frac = FINE_FRACTION_BITS
        if math.isfinite(top):
            while frac > 0 and area * (top - min(low, 0.0)) * 2**frac / g.step >= 2**30:
                frac -= 1
        scale = math.ldexp(g.step, -frac)
        fine_grid = QuantGrid(step=scale, qmin=INT32_MIN, qmax=INT32_MAX)
        feat = self._emit_conv(unit, src, fine_grid, act=(low, top))
        m, n = to_dyadic(scale / (area * g.step))
        add = -int(np.rint(area * g.offset / scale))
        dst = self._new(g)
        self.ops.append(PoolOp(feat, dst, add, Requant(torch.tensor([m]), torch.tensor([n]), g.qmin, g.qmax)))
        return dst

    def _pool_area(self, unit: _Unit) -> int:
        """``H * W`` of the last conv's output for the calibration image size (one shape-only float pass)."""
        shapes = []
        handle = unit.layer.register_forward_hook(lambda m, i, o: shapes.append(o.shape))
        try:
            self.model(self.images[:1])
        finally:
            handle.remove()
        return int(shapes[0][2] * shapes[0][3])


def _acc_bound_per_channel(w: torch.Tensor, src: QuantGrid) -> torch.Tensor:
    """Largest ``|acc_c|`` any input on ``src`` can produce: ``sum |W_c| * max|q|`` (float64 ``[Cout]``)."""
    peak = max(abs(src.qmin), abs(src.qmax))
    return w.abs().to(torch.int64).reshape(w.shape[0], -1).sum(dim=1).double() * peak


def _acc_bound(w: torch.Tensor, src: QuantGrid) -> float:
    return float(_acc_bound_per_channel(w, src).max())


def _act_bounds(act: tuple[float, float], target: QuantGrid) -> tuple[int, int]:
    """Clamp range in output codes: the activation's ``[lo, hi]`` rounded onto the target, within its range."""

    def code(v: float, default: int) -> int:
        return default if not math.isfinite(v) else int(np.rint((v - target.offset) / target.step))

    lo = min(max(code(act[0], target.qmin), target.qmin), target.qmax)
    hi = min(max(code(act[1], target.qmax), target.qmin), target.qmax)
    return lo, hi


@dataclass
class FoldedConv:
    """The integer form of one conv/linear: int32 bias at ``2**-bias_shift`` accumulator units, requant, offset term."""

    bias: torch.Tensor
    bias_shift: int
    requant: Requant | None
    input_offset: tuple[int, int] | None
    output_grid: QuantGrid


def fold_conv(
    weight_codes: torch.Tensor,
    weight_step: float,
    src: QuantGrid,
    target: QuantGrid | None,
    *,
    bn: nn.BatchNorm2d | None = None,
    conv_bias: torch.Tensor | None = None,
    act: tuple[float, float] = (-math.inf, math.inf),
    bias_shift: int | None = None,
) -> FoldedConv:
    """Fold BatchNorm, conv bias, input/output grids and activation into int32 bias and dyadic requant.

    ``weight_codes`` int32 ``[Cout, ...]`` on a grid of step ``weight_step``; input codes on
    ``src`` (its ``offset`` becomes the ``input_offset`` term); output on ``target`` (codes
    clamped to its range and to ``act``), or ``None`` for int32 logits ``(acc << k) + bias``.
    ``bias_shift`` forces ``k`` (else as large as the worst case leaves room for, at most
    :data:`MAX_BIAS_SHIFT`). See the module doc for the formulas.
    """
    w = weight_codes
    cout = w.shape[0]
    s_w, s_x, beta_in = weight_step, src.step, src.offset
    if bn is not None:
        running_mean, running_var = _running_stats(bn)
        inv_std = 1.0 / torch.sqrt(running_var.double() + bn.eps)
        a = bn.weight.detach().double() * inv_std if bn.affine else inv_std
        shift = bn.bias.detach().double() if bn.affine else torch.zeros(cout, dtype=torch.float64)
        d = shift - a * running_mean.double()
    else:
        a = torch.ones(cout, dtype=torch.float64)
        d = torch.zeros(cout, dtype=torch.float64)
    b = conv_bias.detach().double() if conv_bias is not None else torch.zeros(cout, dtype=torch.float64)
    zero = (a == 0).nonzero().flatten()
    if len(zero):
        raise ExportError(
            f"BatchNorm channel {int(zero[0])} has gamma 0; its constant output cannot be "
            "expressed as a scaled accumulator"
        )
    beta_out = 0.0 if target is None else target.offset
    bias_real = (b + (d - beta_out) / a) / (s_w * s_x)  # accumulator units
    offset_per_tap = beta_in / s_x  # accumulator units per weight
    abs_w = w.abs().to(torch.int64).reshape(cout, -1).sum(dim=1).double()
    bound = float((_acc_bound_per_channel(w, src) + bias_real.abs() + abs(offset_per_tap) * abs_w).max()) + 1
    k = _choose_bias_shift(bound, bias_shift)

    bias = torch.from_numpy(np.rint(np.ldexp(bias_real.numpy(), k))).to(torch.int32)
    input_offset = to_dyadic(math.ldexp(offset_per_tap, k)) if beta_in != 0.0 else None
    if target is None:
        return FoldedConv(
            bias, k, None, input_offset, QuantGrid(step=math.ldexp(s_w * s_x, -k), qmin=INT32_MIN, qmax=INT32_MAX)
        )
    try:
        m, n = to_dyadic_array(np.ldexp((a * (s_w * s_x / target.step)).numpy(), -k))
    except ValueError as err:
        raise ExportError(str(err)) from None
    lo, hi = _act_bounds(act, target)
    return FoldedConv(bias, k, Requant(torch.from_numpy(m), torch.from_numpy(n), lo, hi), input_offset, target)


def _choose_bias_shift(bound: float, forced: int | None) -> int:
    """Largest ``k <= MAX_BIAS_SHIFT`` with ``bound * 2**k < 2**31`` (or ``forced`` if it fits)."""
    if bound >= 2**31:
        raise ExportError(f"the worst-case accumulator plus bias ({bound:.3g}) overflows int32")
    room = 0
    while room < MAX_BIAS_SHIFT and bound * 2 ** (room + 1) < 2**31:
        room += 1
    if forced is None:
        return room
    if forced > room:
        raise ExportError(f"bias_shift {forced} overflows int32 (at most {room} fits)")
    return forced


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every BatchNorm2d into the conv before it, in place (float model, before quantization); returns the count.

    ``w' = w * a_c``, ``b' = a_c * b + beta_c - a_c * mean_c`` with ``a_c = gamma_c /
    sqrt(var_c + eps)``; the BatchNorm becomes ``nn.Identity``. A model trained from this
    form quantizes the folded weights (Jacob et al. 2018), so with power-of-two steps
    every requantisation of its integer model is a pure shift; with BatchNorm kept apart
    the per-channel ``a_c`` stays in the multipliers.
    """
    count = 0
    for parent in model.modules():
        if not isinstance(parent, nn.Sequential):
            continue
        children = list(parent.named_children())
        for (_, conv), (bn_name, bn) in itertools.pairwise(children):
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                with torch.no_grad():
                    running_mean, running_var = _running_stats(bn)
                    var = running_var.double()
                    a = (bn.weight.double() if bn.affine else torch.ones_like(var)) / torch.sqrt(var + bn.eps)
                    shift = bn.bias.double() if bn.affine else torch.zeros_like(var)
                    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(var)
                    conv.weight.mul_(a.view(-1, 1, 1, 1).to(conv.weight.dtype))
                    folded = (a * bias + shift - a * running_mean.double()).to(conv.weight.dtype)
                    if conv.bias is None:
                        conv.bias = nn.Parameter(folded)
                    else:
                        conv.bias.copy_(folded)
                setattr(parent, bn_name, nn.Identity())
                count += 1
    return count
