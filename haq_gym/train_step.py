"""One training step's forward, loss and backward, launched as few kernels as possible.

On a GPU a quantization-aware training step of a small network is bound by kernel
launches, not arithmetic: every quantizer adds a handful of small kernels per layer,
forward and backward (docs/performance.md). :class:`TrainStep` removes that cost:

- ``graph`` (CUDA only): the forward, the loss and the backward are captured once in a
  CUDA graph and replayed on every later batch of the same shape. The kernels are the
  ones the plain path launches, so the results are the plain path's. A graph is
  recaptured whenever anything it baked in changes: the batch shape, train/eval mode, or
  any scalar state of a quantizer (bit widths, signedness, chosen clip ranges, the
  initialised flags) — bit widths are static within a finetune, and each search
  episode's finetune captures once. The first ``warmup`` calls of each new
  configuration run plainly (they initialise learned steps and clip ranges, and let
  cuDNN pick its algorithms). The last two configurations are kept, so an epoch's
  ragged last batch gets its own graph rather than evicting the full batch's.
- ``compile``: ``torch.compile`` of forward and loss, after ``warmup`` plain calls
  (Inductor fuses the quantizers' elementwise passes with their neighbours; LSQ traces
  as one graph, forward and backward). On CUDA ``mode="reduce-overhead"`` replays the
  compiled forward and backward from Inductor's own CUDA graphs. The batch dimension is
  traced as a size variable, so a ragged last batch needs no new trace unless Inductor
  specialised to a range of sizes; a new set of bit widths recompiles (a compile of
  MobileNetV2 takes tens of seconds or more), so it suits one-policy finetunes.
- ``graph-compile`` (CUDA only): both of the above: the compiled forward and
  loss (default mode) and their compiled backward are captured in this class's CUDA graph,
  one graph per step as in ``graph``, with the fused kernels of ``compile``. Per
  configuration: ``warmup`` plain calls, one compiled call outside the capture (it
  compiles), then the capture.
- ``plain``: eager PyTorch, the reference and the debugging path.
- ``auto``: ``graph`` on CUDA (no compile time, and a search's per-episode finetunes change
  bit widths every episode), ``plain`` on the CPU (where no fast path is faster;
  docs/performance.md).

The mode comes from the argument, else the ``HAQ_GYM_TRAIN_STEP`` environment variable,
else ``auto``. A fast path that cannot be used (no CUDA, a failed capture or compile)
falls back to ``plain`` with a one-line warning that says why.

The step owns the gradients: each call leaves fresh gradients (not accumulated) in the
parameters' ``.grad``; call the optimiser's ``step()`` but not its ``zero_grad()``,
which would detach the graph's gradient buffers.
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

TRAIN_STEP_MODES = ("auto", "graph", "graph-compile", "compile", "plain")
CUDA_ONLY_MODES = ("graph", "graph-compile")
MODE_ENV = "HAQ_GYM_TRAIN_STEP"
MAX_GRAPHS = 2  # the full batch and a ragged last one; older configurations are dropped

Configuration = tuple[Any, ...]
"""What a captured CUDA graph depends on besides tensor contents (:meth:`TrainStep.configuration`)."""
Captured = tuple[
    torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor | None]
]
"""A captured step: the graph, its static input and labels, loss, logits and the gradients it writes."""


class FastPathWarning(RuntimeWarning):
    """A fast training path could not be used; the plain path runs instead."""


def requested_mode(mode: str | None, source: str = "train step mode") -> str:
    """``mode``, else ``$HAQ_GYM_TRAIN_STEP``, else ``auto``; a name not in :data:`TRAIN_STEP_MODES` is a ValueError.

    ``source`` names ``mode`` in the message (a command passes its flag, e.g. ``--train-step``).
    """
    requested = mode if mode is not None else os.environ.get(MODE_ENV) or "auto"
    if requested not in TRAIN_STEP_MODES:
        named = source if mode is not None else MODE_ENV
        raise ValueError(f"{named} must be one of {', '.join(TRAIN_STEP_MODES)}; got {requested!r}")
    return requested


def resolve_mode(mode: str | None, device: torch.device) -> str:
    """The mode to run: ``mode``, else ``$HAQ_GYM_TRAIN_STEP``, else ``auto``, with ``auto`` resolved for ``device``."""
    requested = requested_mode(mode)
    if requested == "auto":
        return "graph" if device.type == "cuda" else "plain"
    if requested in CUDA_ONLY_MODES and device.type != "cuda":
        _warn(f"train step {requested!r} needs a CUDA device, the model is on {device}; using the plain path")
        return "plain"
    return requested


def _warn(message: str) -> None:
    warnings.warn(message, FastPathWarning, stacklevel=3)


def _first_line(err: BaseException) -> str:
    """``Type: first line of the message``, for a one-line warning."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def _mark_batch_dynamic(*tensors: torch.Tensor) -> None:
    """Let ``torch.compile`` trace dimension 0 as a size variable: other batch sizes reuse the code."""
    for t in tensors:
        if t.dim() > 0:
            torch._dynamo.maybe_mark_dynamic(t, 0)


def _baked(value: Any) -> Any:
    """A hashable copy of ``value`` if a graph could bake it in, else ``None``.

    Scalars, tuples of scalars (e.g. calibration statistics) and dicts whose values are
    scalars (e.g. clip ranges chosen per bit width) are returned; tensors, and dicts
    holding tensors (caches of quantized weights), are not what a graph bakes in.
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, tuple) and all(v is None or isinstance(v, (bool, int, float, str)) for v in value):
        return value
    if isinstance(value, dict) and all(isinstance(v, (bool, int, float, str)) for v in value.values()):
        return tuple(sorted((str(k), v) for k, v in value.items()))
    return None


class TrainStep:
    """``loss, logits = step(x, y)``: forward, ``loss_fn(logits, y)`` and backward, by the chosen path.

    ``model``'s parameters must already be on their device. Quantizers are recognised by
    their ``bits`` and ``set_bits`` (the quantizer protocol of :mod:`haq_gym.quant`); their
    Python scalar state keys the captured graph. The returned tensors are overwritten by
    the next call: read them before.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        mode: str | None = None,
        warmup: int = 1,
    ) -> None:
        self.model = model
        self.loss_fn = loss_fn
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.device = self.params[0].device if self.params else torch.device("cpu")
        self.mode = resolve_mode(mode, self.device)
        self.warmup = max(1, warmup)
        self._quantizers = [m for m in model.modules() if hasattr(m, "bits") and hasattr(m, "set_bits")]
        self._seen: dict[Configuration, int] = {}
        self._graphs: OrderedDict[Configuration, Captured] = OrderedDict()
        self._compiled: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None
        self._plain_calls = 0
        self.captures = 0  # graphs captured so far (for tests and benchmarks)

    # ----------------------------------------------------------------- plain
    def _plain(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for p in self.params:
            p.grad = None
        logits = self.model(x)
        loss = self.loss_fn(logits, y)
        loss.backward()
        return loss.detach(), logits.detach()

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mode in CUDA_ONLY_MODES:
            return self._graph_step(x, y)
        if self.mode == "compile":
            return self._compile_step(x, y)
        return self._plain(x, y)

    # ----------------------------------------------------------------- CUDA graph
    def configuration(self, x: torch.Tensor, y: torch.Tensor) -> Configuration:
        """What a captured graph depends on besides tensor contents: shapes, modes, quantizer scalars."""
        modes = tuple(m.training for m in self.model.modules())
        quant = tuple(
            tuple((k, b) for k, v in vars(m).items() if (b := _baked(v)) is not None) for m in self._quantizers
        )
        return (tuple(x.shape), x.dtype, x.stride(), tuple(y.shape), y.dtype, torch.is_grad_enabled(), modes, quant)

    def _graph_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = self.configuration(x, y)
        captured = self._graphs.get(key)
        if captured is None:
            seen = self._seen.get(key, 0)
            compiled = self.mode == "graph-compile"
            if seen < self.warmup + compiled:
                if len(self._seen) > 64:  # one entry per policy in a search: forget old ones
                    self._seen.clear()
                self._seen[key] = seen + 1
                # graph-compile: the last warm-up call compiles (never inside a capture)
                run = self._compiled_step if compiled and seen == self.warmup else self._plain
                current = torch.cuda.current_stream(self.device)
                side = torch.cuda.Stream(self.device)
                side.wait_stream(current)
                try:
                    with torch.cuda.stream(side):
                        out = run(x, y)
                except Exception as err:  # noqa: BLE001 - a compile failure means: run plainly
                    _warn(f"torch.compile of the training step failed ({_first_line(err)}); using the plain path")
                    self.mode = "plain"
                    current.wait_stream(side)
                    return self._plain(x, y)
                current.wait_stream(side)
                return out
            try:
                captured = self._capture(x, y)
            except Exception as err:  # noqa: BLE001 - any capture failure means: run plainly
                _warn(f"CUDA graph capture of the training step failed ({_first_line(err)}); using the plain path")
                self.mode = "plain"
                self._graphs.clear()
                torch.cuda.synchronize(self.device)
                return self._plain(x, y)
            while len(self._graphs) >= MAX_GRAPHS:
                self._graphs.popitem(last=False)
            self._graphs[key] = captured
        self._graphs.move_to_end(key)
        graph, static_x, static_y, loss, logits, grads = captured
        static_x.copy_(x)
        static_y.copy_(y)
        for p, g in zip(self.params, grads, strict=True):
            p.grad = g  # another graph (the ragged last batch) may have left its own buffers
        graph.replay()
        return loss, logits

    def _capture(self, x: torch.Tensor, y: torch.Tensor) -> Captured:
        for p in self.params:
            p.grad = None  # the capture allocates the gradients its replays write into
        static_x, static_y = x.clone(memory_format=torch.preserve_format), y.clone()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            if self.mode == "graph-compile":
                loss, logits = self._compiled_step(static_x, static_y)
            else:
                logits = self.model(static_x)
                loss = self.loss_fn(logits, static_y)
                loss.backward()
        self.captures += 1
        return graph, static_x, static_y, loss.detach(), logits.detach(), [p.grad for p in self.params]

    # ----------------------------------------------------------------- torch.compile
    def _forward_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(x)
        return self.loss_fn(logits, y), logits

    def _compiled_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward and loss through ``torch.compile``, then the (compiled) backward; fresh gradients."""
        if self._compiled is None:
            # compile: Inductor's CUDA graphs on a GPU; graph-compile: this class captures the compiled code itself
            inductor_graphs = self.mode == "compile" and self.device.type == "cuda"
            self._compiled = torch.compile(self._forward_loss, mode="reduce-overhead" if inductor_graphs else None)
        for p in self.params:
            p.grad = None
        _mark_batch_dynamic(x, y)
        if self.mode == "compile" and self.device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()
        loss, logits = self._compiled(x, y)
        loss.backward()
        return loss.detach(), logits.detach()

    def _compile_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._plain_calls < self.warmup:  # lazy state (learned steps, clip ranges) first, then one trace
            self._plain_calls += 1
            return self._plain(x, y)
        try:
            return self._compiled_step(x, y)
        except Exception as err:  # noqa: BLE001 - a compile failure means: run plainly
            _warn(f"torch.compile of the training step failed ({_first_line(err)}); using the plain path")
            self.mode = "plain"
            return self._plain(x, y)
