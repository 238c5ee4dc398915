"""The fake-quant model as a standard ONNX model (QuantizeLinear/DequantizeLinear), run by onnxruntime.

The model is traced with ``torch.fx`` (each quantized conv/linear a leaf) and every node
is written with ``onnx.helper``; nothing is exported by tracing tensors, so the graph is
the model's own structure and works for every registered network (MobileNetV2,
MobileNetV3-Small with hard-swish, hard-sigmoid and squeeze-excitation, ResNet-20 with
option-A shortcuts, ResNet-18 with projection shortcuts).

Each quantized layer becomes (see ``docs/integer_export.md``, section 6):

- input: ``Clip(x, qmin*s, qmax*s) -> QuantizeLinear(s) -> DequantizeLinear(s)``; the
  codes live in an int8 (signed grid) or uint8 (unsigned) container and the ``Clip``
  holds a sub-8-bit grid to its own range, so a 2..8-bit grid is expressed exactly. An
  LSQ+ offset ``beta`` is a ``Sub`` before and an ``Add`` after. The first layer's
  unquantized input (HAQ's ``[8, -1]``) stays float, as in the fake-quant model.
- weight: the integer codes as an int8 initializer and ``DequantizeLinear(s_w)``;
- then ``Conv``/``Gemm`` with the float bias, BatchNorm as ``BatchNormalization``,
  activations as ``Relu``/``Clip``, hard-sigmoid and hard-swish in torch's own float32
  order of operations (``Clip(x + 3, 0, 6) / 6`` and ``x * Clip(x + 3, 0, 6) / 6``, each
  step a correctly rounded float32 op, so bit for bit the values torch computes; ONNX's
  ``HardSigmoid``/``HardSwish`` compute ``x * (1/6) + 1/2``, which differs from torch in the
  last bit for about a quarter of the inputs and flipped rounding ties), residual adds and
  the squeeze-excitation product as ``Add``/``Mul``: float, as in the fake-quant forward.
"""

from __future__ import annotations

import operator
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch import fx, nn
from torch.nn import functional as F

from haq_gym.export.build import ExportError, weight_codes
from haq_gym.quant.qlayers import QuantConv2d, QuantLayerMixin, QuantLinear

if TYPE_CHECKING:
    from onnx import ModelProto, NodeProto, TensorProto
    from onnxruntime import InferenceSession

OPSET = 21
"""ai.onnx opset of the written models (QuantizeLinear/DequantizeLinear 21, HardSwish, BatchNormalization 15)."""
PRODUCER = "haq-gym"


class OnnxExportError(ExportError):
    """The model has no ONNX form here, or an ONNX file cannot be read or run (the message says which)."""


def _onnx() -> tuple[ModuleType, ModuleType, ModuleType]:
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError:
        raise OnnxExportError(
            "ONNX export needs the onnx extra: pip install -c constraints.txt 'haq-gym[onnx]'"
        ) from None
    return onnx, helper, numpy_helper


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, QuantLayerMixin) or super().is_leaf_module(m, qualname)


@dataclass
class _Graph:
    helper: ModuleType
    numpy_helper: ModuleType
    nodes: list[NodeProto] = field(default_factory=list)
    inits: list[TensorProto] = field(default_factory=list)
    code_outputs: list[tuple[str, str, int, int]] = field(default_factory=list)  # layer, tensor, elem type, rank
    count: int = 0

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{re.sub(r'[^A-Za-z0-9_]', '_', hint)}_{self.count}"

    def const(self, hint: str, value: np.ndarray | np.generic) -> str:
        n = self.name(hint)
        self.inits.append(self.numpy_helper.from_array(np.asarray(value), n))
        return n

    def node(self, op: str, inputs: Sequence[str], hint: str, **attrs: Any) -> str:
        out = self.name(hint)
        self.nodes.append(self.helper.make_node(op, list(inputs), [out], name=out + "_op", **attrs))
        return out


def build_onnx_model(
    model: nn.Module,
    layers: Sequence[tuple[str, QuantLayerMixin]],
    image_shape: Sequence[int],
    *,
    expose_codes: bool = False,
) -> ModelProto:
    """The ONNX ``ModelProto`` of the fake-quant ``model`` for images ``[N, *image_shape]`` (float32 in, logits out).

    ``expose_codes`` adds each quantized layer's input codes (int8/uint8) as graph outputs
    named after the layer, for per-layer comparison. Raises :class:`OnnxExportError`
    naming the node when part of the model has no ONNX form here.
    """
    onnx, helper, numpy_helper = _onnx()
    names = {id(m): n for n, m in layers}
    for name, layer in layers:
        if not 2 <= layer.w_bit <= 8:
            raise OnnxExportError(
                f"layer {name!r} has {layer.w_bit}-bit weights; the ONNX int8 container holds 2..8 bits"
            )
        if layer.a_bit != -1 and not 2 <= layer.a_bit <= 8:
            raise OnnxExportError(
                f"layer {name!r} has {layer.a_bit}-bit inputs; the ONNX int8/uint8 containers hold 2..8 bits"
            )
    was_training = model.training
    model.eval()
    try:
        traced = _Tracer().trace(model)
    except Exception as err:  # noqa: BLE001 - fx raises many types on untraceable control flow
        raise OnnxExportError(f"cannot trace {type(model).__name__} with torch.fx: {err}") from None
    g = _Graph(helper, numpy_helper)
    env: dict[str, str] = {}
    modules = dict(model.named_modules())
    output = None
    try:
        with torch.no_grad():
            for node in traced.nodes:
                if node.op == "placeholder":
                    env[node.name] = "input"
                elif node.op == "output":
                    output = env[node.args[0].name]
                elif node.op == "call_module":
                    env[node.name] = _module(g, modules[node.target], node, env, names)
                elif node.op in ("call_function", "call_method"):
                    env[node.name] = _function(g, node, env)
                else:
                    raise OnnxExportError(f"node {node.name} ({node.op} {node.target}) has no ONNX form here")
    finally:
        model.train(was_training)
    inputs = [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["batch", *image_shape])]
    g.nodes.append(helper.make_node("Identity", [output], ["logits"], name="logits_op"))
    outputs = [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", None])]
    if expose_codes:
        for layer_name, tensor, elem, rank in g.code_outputs:
            g.nodes.append(helper.make_node("Identity", [tensor], [f"codes:{layer_name}"], name=f"codes_{tensor}"))
            outputs.append(helper.make_tensor_value_info(f"codes:{layer_name}", elem, [None] * rank))
    graph = helper.make_graph(g.nodes, f"{type(model).__name__}_qdq", inputs, outputs, g.inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name=PRODUCER)
    proto.ir_version = 10
    onnx.checker.check_model(proto, full_check=True)
    checked: ModelProto = proto
    return checked


def _arg(env: dict[str, str], a: object) -> str:
    if not isinstance(a, fx.Node):
        raise OnnxExportError(f"expected a tensor argument, got {a!r}")
    return env[a.name]


def _module(g: _Graph, m: nn.Module, node: fx.Node, env: dict[str, str], names: dict[int, str]) -> str:
    x = _arg(env, node.args[0])
    if isinstance(m, QuantLayerMixin):
        return _quant_layer(g, m, names[id(m)], x)
    if isinstance(m, nn.BatchNorm2d):
        if m.running_mean is None or m.running_var is None:
            raise OnnxExportError(f"module {node.target}: a BatchNorm without running statistics has no ONNX form here")
        scale = m.weight.detach().numpy() if m.affine else np.ones(m.num_features, np.float32)
        bias = m.bias.detach().numpy() if m.affine else np.zeros(m.num_features, np.float32)
        ins = [
            x,
            g.const("bn_scale", scale.astype(np.float32)),
            g.const("bn_bias", bias.astype(np.float32)),
            g.const("bn_mean", m.running_mean.numpy().astype(np.float32)),
            g.const("bn_var", m.running_var.numpy().astype(np.float32)),
        ]
        return g.node("BatchNormalization", ins, "bn", epsilon=float(m.eps))
    if isinstance(m, nn.ReLU):
        return g.node("Relu", [x], "relu")
    if isinstance(m, nn.Hardtanh):  # ReLU6
        return _clip(g, x, float(m.min_val), float(m.max_val))
    if isinstance(m, nn.Hardswish):
        return _hardswish(g, x)
    if isinstance(m, nn.Hardsigmoid):
        return _hardsigmoid(g, x)
    if isinstance(m, (nn.Dropout, nn.Identity)):
        return x
    if isinstance(m, nn.AdaptiveAvgPool2d) and _is_one(m.output_size):
        return g.node("GlobalAveragePool", [x], "gap")
    if isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1:
        return g.node("Flatten", [x], "flatten", axis=1)
    raise OnnxExportError(f"module {node.target} ({type(m).__name__}) has no ONNX form here")


def _is_one(size: object) -> bool:
    return size == 1 or (isinstance(size, (tuple, list)) and tuple(size) in ((1, 1), (1,)))


def _clip(g: _Graph, x: str, lo: float, hi: float) -> str:
    return g.node("Clip", [x, g.const("lo", np.float32(lo)), g.const("hi", np.float32(hi))], "clip")


def _relu6_of_shift(g: _Graph, x: str) -> str:
    """``Clip(x + 3, 0, 6)``: the common part of torch's hard-sigmoid and hard-swish."""
    return _clip(g, g.node("Add", [x, g.const("three", np.float32(3.0))], "add3"), 0.0, 6.0)


def _hardsigmoid(g: _Graph, x: str) -> str:
    """torch's ``hardsigmoid``: ``clamp(x + 3, 0, 6) / 6``, in that order (bit-identical float32)."""
    return g.node("Div", [_relu6_of_shift(g, x), g.const("six", np.float32(6.0))], "hardsigmoid")


def _hardswish(g: _Graph, x: str) -> str:
    """torch's ``hardswish``: ``x * clamp(x + 3, 0, 6) / 6``, multiply first (bit-identical float32)."""
    product = g.node("Mul", [x, _relu6_of_shift(g, x)], "hardswish_mul")
    return g.node("Div", [product, g.const("six", np.float32(6.0))], "hardswish")


def _quant_layer(g: _Graph, m: QuantLayerMixin, name: str, x: str) -> str:
    onnx, _, _ = _onnx()
    if m.a_bit != -1:
        grid = m.input_quantizer.grid()
        signed = grid.qmin < 0
        lo, hi = (-128, 127) if signed else (0, 255)
        if grid.qmin < lo or grid.qmax > hi:
            raise OnnxExportError(
                f"layer {name!r}: input grid [{grid.qmin}, {grid.qmax}] does not fit an "
                f"{'int8' if signed else 'uint8'} container"
            )
        input_step = np.float32(grid.step)
        if grid.offset != 0.0:
            x = g.node("Sub", [x, g.const("offset", np.float32(grid.offset))], "sub_offset")
        if (grid.qmin, grid.qmax) != (lo, hi):
            x = _clip(
                g, x, float(np.float32(grid.qmin * float(input_step))), float(np.float32(grid.qmax * float(input_step)))
            )
        zp = g.const("zp", np.int8(0) if signed else np.uint8(0))
        scale = g.const("scale", input_step)
        input_codes = g.node("QuantizeLinear", [x, scale, zp], "q")
        g.code_outputs.append(
            (
                name,
                input_codes,
                onnx.TensorProto.INT8 if signed else onnx.TensorProto.UINT8,
                2 if isinstance(m, QuantLinear) else 4,
            )
        )
        x = g.node("DequantizeLinear", [input_codes, scale, zp], "dq")
        if grid.offset != 0.0:
            x = g.node("Add", [x, g.const("offset", np.float32(grid.offset))], "add_offset")
    codes, step = weight_codes(name, m)
    w = g.node(
        "DequantizeLinear",
        [
            g.const("w_codes", codes.numpy().astype(np.int8)),
            g.const("w_scale", np.float32(step)),
            g.const("w_zp", np.int8(0)),
        ],
        "w_dq",
    )
    bias = cast("torch.Tensor | None", m.bias)
    ins = [x, w] + ([g.const("bias", bias.detach().numpy().astype(np.float32))] if bias is not None else [])
    if isinstance(m, QuantLinear):
        return g.node("Gemm", ins, "gemm", transB=1)
    assert isinstance(m, QuantConv2d)
    if m.padding_mode != "zeros" or isinstance(m.padding, str):
        raise OnnxExportError(f"layer {name!r}: only numeric zero padding has an ONNX form here")
    ph, pw = m.padding
    return g.node(
        "Conv",
        ins,
        "conv",
        strides=list(m.stride),
        pads=[ph, pw, ph, pw],
        dilations=list(m.dilation),
        group=int(m.groups),
        kernel_shape=list(m.kernel_size),
    )


def _function(g: _Graph, node: fx.Node, env: dict[str, str]) -> str:
    t, args, kwargs = node.target, node.args, node.kwargs
    if t in (operator.add, operator.iadd, torch.add) and len(args) == 2:
        return g.node("Add", [_arg(env, args[0]), _arg(env, args[1])], "add")
    if t in (operator.mul, operator.imul, torch.mul) and len(args) == 2:
        return g.node("Mul", [_arg(env, args[0]), _arg(env, args[1])], "mul")
    if t in (F.relu, torch.relu) or t == "relu":
        return g.node("Relu", [_arg(env, args[0])], "relu")
    if t is F.hardswish:
        return _hardswish(g, _arg(env, args[0]))
    if t is F.hardsigmoid:
        return _hardsigmoid(g, _arg(env, args[0]))
    if t is F.adaptive_avg_pool2d and _is_one(args[1] if len(args) > 1 else kwargs.get("output_size")):
        return g.node("GlobalAveragePool", [_arg(env, args[0])], "gap")
    if t in (torch.flatten, "flatten") and (args[1:] or [kwargs.get("start_dim", 0)])[0] == 1 and len(args) <= 2:
        return g.node("Flatten", [_arg(env, args[0])], "flatten", axis=1)
    if t is F.dropout:
        return _arg(env, args[0])
    if t is operator.getitem and isinstance(args[1], tuple):
        return _slice(g, _arg(env, args[0]), args[1], node)
    if t is F.pad:
        pad = list(cast(Sequence[int], args[1]))
        value = args[3] if len(args) > 3 else kwargs.get("value", 0.0)
        mode = args[2] if len(args) > 2 else kwargs.get("mode", "constant")
        if mode != "constant" or value not in (0, 0.0, None) or len(pad) % 2:
            raise OnnxExportError(f"node {node.name}: only constant zero padding has an ONNX form here")
        dims = len(pad) // 2  # torch: last dim first, (begin, end) pairs
        begins = [0] * (4 - dims) + [pad[2 * (dims - 1 - i)] for i in range(dims)]
        ends = [0] * (4 - dims) + [pad[2 * (dims - 1 - i) + 1] for i in range(dims)]
        return g.node("Pad", [_arg(env, args[0]), g.const("pads", np.array(begins + ends, np.int64))], "pad")
    raise OnnxExportError(f"node {node.name} ({getattr(t, '__name__', t)}) has no ONNX form here")


def _slice(g: _Graph, x: str, index: tuple[Any, ...], node: fx.Node) -> str:
    starts, ends, axes, steps = [], [], [], []
    for axis, s in enumerate(index):
        if not isinstance(s, slice):
            raise OnnxExportError(f"node {node.name}: only slicing with ':' and '::k' has an ONNX form here")
        if s == slice(None):
            continue
        starts.append(s.start or 0)
        ends.append(s.stop if s.stop is not None else 2**62)
        axes.append(axis)
        steps.append(s.step or 1)
    if not axes:
        return x
    return g.node(
        "Slice",
        [
            x,
            *(
                g.const(k, np.array(v, np.int64))
                for k, v in (("starts", starts), ("ends", ends), ("axes", axes), ("steps", steps))
            ),
        ],
        "slice",
    )


def write_onnx(path: str | os.PathLike[str], proto: ModelProto) -> int:
    """Write ``proto`` atomically; returns the file size in bytes."""
    from haq_gym.util import write_atomic

    data = proto.SerializeToString()
    write_atomic(path, data)
    return len(data)


def load_onnx(path: str | os.PathLike[str]) -> ModelProto:
    """Read and check an ONNX file; :class:`OnnxExportError` with one line if it is not a valid ONNX model."""
    onnx, _, _ = _onnx()
    try:
        proto = onnx.load(os.fspath(path))
        onnx.checker.check_model(proto)
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001 - protobuf DecodeError, onnx ValidationError
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise OnnxExportError(f"{os.fspath(path)} is not a valid ONNX model ({type(err).__name__}: {first})") from None
    loaded: ModelProto = proto
    return loaded


_MISSING = re.compile(r"(?:implementation for|not a registered function/op)\s*:?\s*([\w.:]+)\((\d+)\)")
_MISSING2 = re.compile(r"([\w.:]+)\((-?\d+)\) is not a registered function/op")


def open_session(proto: ModelProto, *, threads: int | None = None, optimize: bool = True) -> InferenceSession:
    """An onnxruntime CPU session for ``proto``; :class:`OnnxExportError` naming the operator and opset it lacks."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise OnnxExportError(
            "running ONNX needs the onnx extra: pip install -c constraints.txt 'haq-gym[onnx]'"
        ) from None
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        return ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - onnxruntime's pybind errors (Fail, InvalidGraph, ...) share no base
        text = str(err)
        found = _MISSING.search(text) or _MISSING2.search(text)
        opset = {o.domain or "ai.onnx": o.version for o in proto.opset_import}
        if found:
            op = found.group(1)
            raise OnnxExportError(
                f"onnxruntime {ort.__version__} has no CPU kernel for operator {op} at opset "
                f"{found.group(2)} (model opsets {opset}); use a newer onnxruntime"
            ) from None
        raise OnnxExportError(
            f"onnxruntime {ort.__version__} cannot load the model (opsets {opset}): "
            f"{text.strip().splitlines()[0] if text.strip() else type(err).__name__}"
        ) from None


def onnx_logits(
    session: InferenceSession, images: torch.Tensor, batch_size: int = 128, progress: bool = False
) -> torch.Tensor:
    """Float logits of onnxruntime for float images ``[N, C, H, W]``."""
    from tqdm import tqdm

    starts = range(0, len(images), batch_size)
    outs = [
        session.run(["logits"], {"input": images[i : i + batch_size].numpy().astype(np.float32)})[0]
        for i in tqdm(starts, desc="onnxruntime", unit="batch", disable=not progress, leave=False)
    ]
    return torch.from_numpy(np.concatenate(outs))


@dataclass
class OnnxComparison:
    """onnxruntime against the fake-quant model on the same float images."""

    images: int
    fake_top1: float
    onnx_top1: float
    identical_predictions: int
    layer_codes: dict[str, tuple[int, int]]  # layer -> (elements, equal codes), free-running
    max_logit_diff: float

    @property
    def code_agreement(self) -> float:
        total = sum(n for n, _ in self.layer_codes.values())
        return sum(e for _, e in self.layer_codes.values()) / total if total else 1.0


def compare_onnx(
    model: nn.Module,
    layers: Sequence[tuple[str, QuantLayerMixin]],
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int = 64,
    threads: int | None = None,
    progress: bool = False,
) -> OnnxComparison:
    """Run the fake-quant model and its ONNX form (with per-layer code outputs) in onnxruntime; compare.

    Codes are compared free-running at every quantized layer's input (both models run on
    their own); predictions and logits at the output.
    """
    from tqdm import tqdm

    proto = build_onnx_model(model, layers, tuple(images.shape[1:]), expose_codes=True)
    session = open_session(proto, threads=threads)
    quantized = [(n, m) for n, m in layers if m.a_bit != -1]
    codes: dict[str, torch.Tensor] = {}

    def hook(name: str) -> Callable[[nn.Module, tuple[Any, ...]], None]:
        def record(module: nn.Module, args: tuple[Any, ...]) -> None:
            quantizer = cast(QuantLayerMixin, module).input_quantizer  # registered on quantized layers only
            grid = quantizer.grid()
            codes[name] = torch.round((quantizer(args[0]).double() - grid.offset) / grid.step)

        return record

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in quantized]
    out_names = ["logits"] + [f"codes:{n}" for n, _ in quantized]
    stats = {n: [0, 0] for n, _ in quantized}
    fake_pred, onnx_pred = [], []
    max_diff = 0.0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for i in tqdm(
                range(0, len(images), batch_size),
                desc="fake-quant vs onnxruntime",
                unit="batch",
                disable=not progress,
                leave=False,
            ):
                batch = images[i : i + batch_size]
                ref = model(batch)
                res = session.run(out_names, {"input": batch.numpy().astype(np.float32)})
                logits = torch.from_numpy(res[0])
                max_diff = max(max_diff, float((logits - ref).abs().max()))
                fake_pred.append(ref.argmax(dim=1))
                onnx_pred.append(logits.argmax(dim=1))
                for (n, _), got in zip(quantized, res[1:], strict=True):
                    theirs = codes[n].reshape(got.shape)
                    stats[n][0] += got.size
                    stats[n][1] += int((torch.from_numpy(got.astype(np.int64)).double() == theirs).sum())
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    fp, op = torch.cat(fake_pred), torch.cat(onnx_pred)
    count = len(images)
    return OnnxComparison(
        count,
        100.0 * float((fp == labels).sum()) / count,
        100.0 * float((op == labels).sum()) / count,
        int((fp == op).sum()),
        {k: (v[0], v[1]) for k, v in stats.items()},
        max_diff,
    )


def onnx_top1(
    session: InferenceSession, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 128, progress: bool = False
) -> float:
    """onnxruntime's top-1 (percent) on ``images``."""
    pred = onnx_logits(session, images, batch_size, progress).argmax(dim=1)
    return 100.0 * float((pred == labels).sum()) / len(images)


def describe(proto: ModelProto) -> str:
    """One line: node count, Q/DQ pairs and the opset."""
    ops = [n.op_type for n in proto.graph.node]
    return (
        f"{len(ops)} nodes, {ops.count('QuantizeLinear')} QuantizeLinear, {ops.count('DequantizeLinear')} "
        f"DequantizeLinear, opset {OPSET}"
    )


__all__ = [
    "OPSET",
    "OnnxComparison",
    "OnnxExportError",
    "build_onnx_model",
    "compare_onnx",
    "describe",
    "load_onnx",
    "onnx_logits",
    "onnx_top1",
    "open_session",
    "write_onnx",
]
