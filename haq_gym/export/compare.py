"""Fake-quant model versus integer model: predictions, and integer codes at every layer input.

Both paths start from the same image codes: the integer model quantizes the image at
its boundary (:meth:`IntegerModel.quantize_input`) and the fake-quant reference gets
those codes times the step (:func:`fake_quant_input`), exactly what its first layer
would see had its input been quantized.

Per layer, the fake-quant model's codes are ``round((q(x) - offset) / step)`` of the
layer's own input quantizer ``q`` at that layer's input ``x``. Two comparisons:

- free-running: both models run on their own; a difference at one layer can propagate
  to later layers.
- teacher-forced: every quantized layer of the fake-quant model gets the *integer*
  model's codes as its input, so each layer's comparison isolates the arithmetic between
  two quantizers (float32 conv + BN versus int32 accumulation + dyadic requant). A
  mismatch there is explained by a rounding tie when the fake-quant value ``u = (x -
  offset) / step`` lies within :data:`TIE_TOLERANCE` of a half-integer; the report
  gives each layer's largest such distance.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import torch
from torch import nn

from haq_gym.export.integer_model import IntegerModel
from haq_gym.quant.qlayers import QuantLayerMixin

TIE_TOLERANCE = 1e-3
"""Distance (in steps) from a half-integer within which float32 and exact arithmetic may round apart."""


@dataclass
class LayerAgreement:
    """Codes at one layer's input: element count, how many agree free-running and teacher-forced."""

    name: str
    elements: int
    free_equal: int
    forced_equal: int
    forced_max_abs_diff: int
    tie_distance: float  # largest |(|u - floor(u)| - 0.5)| over teacher-forced mismatches; -1 if none

    @property
    def free_fraction(self) -> float:
        return self.free_equal / self.elements

    @property
    def forced_fraction(self) -> float:
        return self.forced_equal / self.elements


@dataclass
class Comparison:
    """Everything measured by :func:`compare_models` (percentages in %, fractions in [0, 1])."""

    images: int
    fake_top1: float
    integer_top1: float
    prediction_agreement: float
    forced_prediction_agreement: float
    max_logit_diff: float
    layers: list[LayerAgreement] = field(default_factory=list)

    @property
    def free_code_agreement(self) -> float:
        return sum(a.free_equal for a in self.layers) / sum(a.elements for a in self.layers)

    @property
    def forced_code_agreement(self) -> float:
        return sum(a.forced_equal for a in self.layers) / sum(a.elements for a in self.layers)

    @property
    def unexplained_mismatches(self) -> list[str]:
        """Layers with a teacher-forced mismatch that is not a near tie (or differs by more than 1)."""
        return [
            a.name
            for a in self.layers
            if a.forced_equal < a.elements and (a.tie_distance > TIE_TOLERANCE or a.forced_max_abs_diff > 1)
        ]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            free_code_agreement=self.free_code_agreement,
            forced_code_agreement=self.forced_code_agreement,
            unexplained_mismatches=self.unexplained_mismatches,
        )
        return data


def fake_quant_input(
    integer_model: IntegerModel, images: torch.Tensor, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The reference model's input: the integer model's image codes as real values in ``dtype``."""
    g = integer_model.input_grid
    codes = integer_model.quantize_input(images)
    return (codes.double() * g.step + g.offset).to(dtype)


def float64_reference(
    model: nn.Module, layers: Sequence[tuple[str, QuantLayerMixin]]
) -> tuple[nn.Module, list[tuple[str, QuantLayerMixin]]]:
    """A float64 copy of the fake-quant model with the *same* quantized weights, and its layers.

    Plain ``model.double()`` would quantize the float weights again in float64, and a
    weight within float32 precision of a rounding tie would get another code: a different
    model. Here each weight is first replaced by its float32 fake-quantized value, whose
    codes a float64 re-quantization keeps, so only the activation arithmetic changes.
    """
    copied = copy.deepcopy(model).eval()
    twins = [(name, m) for name, m in copied.named_modules() if isinstance(m, QuantLayerMixin)]
    if [n for n, _ in twins] != [n for n, _ in layers]:
        raise ValueError("the layers given are not the model's quantized layers in module order")
    with torch.no_grad():
        for _, layer in twins:
            layer.weight.copy_(layer.weight_quantizer(layer.weight))
    return copied.double(), twins


class _Probe:
    """Forward pre-hooks on the quantized layers: record fake-quant codes, optionally substitute integer codes."""

    def __init__(self, layers: Sequence[tuple[str, QuantLayerMixin]], integer_model: IntegerModel) -> None:
        self.layers = layers
        self.im = integer_model
        self.codes: dict[str, torch.Tensor] = {}
        self.values: dict[str, torch.Tensor] = {}
        self.force: dict[str, torch.Tensor] | None = None
        self.handles = [layer.register_forward_pre_hook(self._hook(name)) for name, layer in layers]

    def _hook(self, name: str) -> Callable[[nn.Module, tuple[Any, ...]], tuple[torch.Tensor] | None]:
        grid = self.im.grids[self.im.layer_inputs[name]]

        def hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[torch.Tensor] | None:
            layer = cast(QuantLayerMixin, module)  # registered on the quantized layers only
            x = args[0]
            q = layer.input_quantizer(x) if layer.a_bit != -1 else x
            self.codes[name] = torch.round((q.double() - grid.offset) / grid.step).to(torch.int64)
            self.values[name] = x
            if self.force is None:
                return None
            forced = (self.force[self.im.layer_inputs[name]].double() * grid.step + grid.offset).to(x.dtype)
            return (forced.reshape(x.shape),)

        return hook

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def compare_models(
    model: nn.Module,
    layers: Sequence[tuple[str, QuantLayerMixin]],
    integer_model: IntegerModel,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int = 50,
) -> Comparison:
    """Run both models on ``images [N, 3, H, W]`` and compare predictions and per-layer codes.

    The reference runs in its parameters' dtype: float32 as trained, or float64 (after
    ``model.double()``) to see which differences come from float32 rounding.
    """
    dtype = next(model.parameters()).dtype
    was_training = model.training
    model.eval()
    probe = _Probe(layers, integer_model)
    names = [n for n, _ in layers]
    stats = {n: [0, 0, 0, 0, -1.0] for n in names}  # elements, free_equal, forced_equal, max diff, tie distance
    fake_pred, int_pred, forced_pred = [], [], []
    max_logit_diff = 0.0
    try:
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                batch = images[start : start + batch_size]
                ref_in = fake_quant_input(integer_model, batch, dtype)
                logits, env = integer_model.forward(integer_model.quantize_input(batch), record=True)
                int_pred.append(logits.argmax(dim=1))
                probe.force = None
                fake_pred.append(model(ref_in).argmax(dim=1))
                for n in names:
                    ours = env[integer_model.layer_inputs[n]].to(torch.int64)
                    stats[n][0] += ours.numel()
                    stats[n][1] += int((probe.codes[n].reshape(ours.shape) == ours).sum())
                probe.force = env
                forced_logits = model(ref_in)
                forced_pred.append(forced_logits.argmax(dim=1))
                max_logit_diff = max(
                    max_logit_diff,
                    float((forced_logits.double() - logits.double() * integer_model.output_step).abs().max()),
                )
                for n in names:
                    ours = env[integer_model.layer_inputs[n]].to(torch.int64)
                    theirs = probe.codes[n].reshape(ours.shape)
                    diff = theirs != ours
                    stats[n][2] += int((~diff).sum())
                    if bool(diff.any()):
                        stats[n][3] = max(stats[n][3], int((theirs - ours).abs().max()))
                        grid = integer_model.grids[integer_model.layer_inputs[n]]
                        u = (probe.values[n].reshape(ours.shape)[diff].double() - grid.offset) / grid.step
                        dist = float(((u - torch.floor(u)) - 0.5).abs().max())
                        stats[n][4] = max(stats[n][4], dist)
    finally:
        probe.close()
        model.train(was_training)
    fake_pred_t, int_pred_t, forced_pred_t = torch.cat(fake_pred), torch.cat(int_pred), torch.cat(forced_pred)
    n_img = len(images)
    return Comparison(
        images=n_img,
        fake_top1=100.0 * float((fake_pred_t == labels).sum()) / n_img,
        integer_top1=100.0 * float((int_pred_t == labels).sum()) / n_img,
        prediction_agreement=float((fake_pred_t == int_pred_t).sum()) / n_img,
        forced_prediction_agreement=float((forced_pred_t == int_pred_t).sum()) / n_img,
        max_logit_diff=max_logit_diff,
        layers=[_agreement(n, stats[n]) for n in names],
    )


def _agreement(name: str, stats: list[float]) -> LayerAgreement:
    elements, free_equal, forced_equal, max_diff, tie_distance = stats
    return LayerAgreement(name, int(elements), int(free_equal), int(forced_equal), int(max_diff), tie_distance)
