"""The fake-quant model to export, from a searched policy (HAQ's calibrated linear quantizers) or a QAT checkpoint.

Both give the same :class:`ExportSource`: the wrapped model in eval mode, its layers,
the data (the test split is where integer and fake-quant top-1 are compared), the
calibration images that fix the input boundary's step, and the per-layer facts the flash
cost model needs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from haq_gym.cost.layer_info import LayerInfo, measure_layers
from haq_gym.cost.model_size import flash_bits
from haq_gym.data import DataBundle, load_dataset, materialize
from haq_gym.models.spec import ModelSpec
from haq_gym.policy import PolicyFile, uniform_bits
from haq_gym.quant import apply_policy, calibrate
from haq_gym.quant.qlayers import QuantLayerMixin
from haq_gym.quantized_model import QuantizedModel, check_policy


@dataclass
class ExportSource:
    model: nn.Module
    layers: list[tuple[str, QuantLayerMixin]]
    bits: list[list[int]]
    bundle: DataBundle
    calibration_images: torch.Tensor
    layer_infos: list[LayerInfo]
    description: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def flash_bits(self) -> int:
        """The flash cost model's figure for this policy: ``sum(weights * w_bit)``."""
        return flash_bits(self.layer_infos, self.bits, 8)

    def test_split(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images [N, 3, H, W], labels [N])`` of the dataset's test split."""
        return materialize(self.bundle.test)


def source_from_policy(
    bits: PolicyFile | Sequence[Sequence[int]] | None = None,
    *,
    model: str = "mobilenetv2",
    width_mult: float = 1.0,
    dataset: str = "digits",
    data_root: str | None = None,
    float_checkpoint: str | None = None,
    calibration_size: int = 64,
    uniform: tuple[int, int] | None = None,
    quantizer: str = "linear",
    progress: bool = False,
    model_kwargs: dict[str, Any] | None = None,
    weights: str | None = None,
    image_size: int | None = None,
) -> ExportSource:
    """The float model with ``quantizer`` quantizers, calibrated as the search calibrates, with the policy applied.

    ``bits`` is a :class:`PolicyFile` (its model, dataset, model keywords and input size win
    over the keywords) or a plain ``[[w_bit, a_bit], ...]`` list (HAQ's strategy format);
    ``uniform=(w, a)`` instead builds :func:`uniform_bits`. ``quantizer`` is a family of
    :mod:`haq_gym.quant.families`: HAQ's ``linear`` (default) or the LSQ ones at their
    initial steps (no training). ``float_checkpoint=None`` uses the cached default float
    model of a built-in network (trained on first use). The model comes from
    :class:`~haq_gym.quantized_model.QuantizedModel`, the builder the search uses too.
    """
    if isinstance(bits, PolicyFile):
        model, dataset = bits.model, bits.dataset
        spec = ModelSpec.from_policy_kwargs(bits.model, bits.model_kwargs)
        width_mult = spec.width_mult
        image_size = bits.model_kwargs.get("image_size", image_size)
    else:
        spec = ModelSpec(model, width_mult=width_mult, kwargs=dict(model_kwargs or {}), weights=weights)
    if calibration_size < 1:
        raise ValueError(f"calibration_size must be at least 1, got {calibration_size}")
    bundle = load_dataset(dataset, data_root, image_size=image_size)
    if isinstance(bits, PolicyFile):  # before the float model is trained or loaded
        declared = bits.model_kwargs.get("num_classes")
        if declared is not None and declared != bundle.num_classes:
            raise ValueError(
                f"the policy's model_kwargs.num_classes is {declared!r}, but dataset {dataset!r} has "
                f"{bundle.num_classes} classes"
            )
    qm = QuantizedModel.from_float(
        spec,
        bundle.num_classes,
        bundle.image_size,
        checkpoint=float_checkpoint,
        dataset=dataset,
        bundle=bundle,
        family=quantizer,
        progress=progress,
        min_accuracy=95.0 if dataset == "digits" else None,
    )
    names = qm.layer_names
    if isinstance(bits, PolicyFile):
        policy = check_policy(bits, names, 2, 8)
        description = f"policy of {model} (width {width_mult:g}) on {dataset}, {quantizer} quantizers"
    elif uniform is not None:
        policy = uniform_bits(len(names), *uniform)
        description = (
            f"uniform W{uniform[0]}A{uniform[1]} {model} (width {width_mult:g}) on {dataset}, {quantizer} quantizers"
        )
    elif bits is not None:
        policy = check_policy(bits, names, 1, 8)
        description = f"given policy of {model} (width {width_mult:g}) on {dataset}, {quantizer} quantizers"
    else:
        raise ValueError("give a policy (bits) or uniform=(w_bit, a_bit)")
    train_x = materialize(bundle.search_train)[0]
    if calibration_size > len(train_x):
        raise ValueError(f"calibration_size {calibration_size} exceeds the {len(train_x)} search-train images")
    calib = train_x[:calibration_size]
    cl = torch.channels_last  # calibrated exactly as the search's evaluator calibrates
    qm.model.to(memory_format=cl)  # type: ignore[call-overload]  # torch's overloads omit memory_format
    calibrate(qm.model, qm.modules, calib.contiguous(memory_format=cl))
    apply_policy(qm.modules, policy)
    qm.model.eval()
    infos = measure_layers(qm.model, qm.layers, bundle.image_size)
    return ExportSource(
        qm.model,
        qm.layers,
        policy,
        bundle,
        calib,
        infos,
        description,
        {
            "model": model,
            "width_mult": width_mult,
            "dataset": dataset,
            "quantizer": quantizer,
            "float_checkpoint": qm.checkpoint,
            "model_kwargs": spec.to_policy_kwargs(bundle.num_classes),
        },
    )


def recalibrate(source: ExportSource) -> None:
    """Calibrate the source's quantizers again on its calibration images (after swapping quantizers or folding BN)."""
    calibrate(source.model, [m for _, m in source.layers], source.calibration_images)
    source.model.eval()


def source_from_checkpoint(
    path: str | os.PathLike[str], *, data_root: str | None = None, calibration_size: int = 64
) -> ExportSource:
    """A QAT checkpoint of the finetune module, its quantizers as trained (not calibrated again)."""
    ckpt = QuantizedModel.from_checkpoint(path)
    meta = dict(ckpt.meta)
    dataset = meta.get("dataset") or (ckpt.policy.dataset if ckpt.policy else "")
    bundle = load_dataset(dataset, data_root, image_size=meta.get("image_size"))
    calib = materialize(bundle.search_train)[0][:calibration_size]
    layers = list(ckpt.layers)
    ckpt.model.eval()
    infos = measure_layers(ckpt.model, layers, bundle.image_size)
    bits = [[m.w_bit, m.a_bit] for _, m in layers]
    meta.update(checkpoint=os.fspath(path), quantizer=ckpt.family)
    return ExportSource(
        ckpt.model,
        layers,
        bits,
        bundle,
        calib,
        infos,
        f"QAT checkpoint {os.fspath(path)} ({meta.get('model', '?')} on {dataset})",
        meta,
    )
