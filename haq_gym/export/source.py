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

import torch
from torch import nn

from haq_gym.cost.layer_info import LayerInfo, measure_layers
from haq_gym.cost.model_size import flash_bits
from haq_gym.data import DataBundle, load_dataset, materialize
from haq_gym.finetune.checkpoint import load_qat_checkpoint
from haq_gym.policy import PolicyFile, uniform_bits
from haq_gym.quant import apply_policy, calibrate
from haq_gym.quant.qlayers import QuantLayerMixin


@dataclass
class ExportSource:
    model: nn.Module
    layers: list[tuple[str, QuantLayerMixin]]
    bits: list[list[int]]
    bundle: DataBundle
    calibration_images: torch.Tensor
    layer_infos: list[LayerInfo]
    description: str
    meta: dict = field(default_factory=dict)

    @property
    def flash_bits(self) -> int:
        """The flash cost model's figure for this policy: ``sum(weights * w_bit)``."""
        return flash_bits(self.layer_infos, self.bits, 8)

    def test_split(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images [N, 3, H, W], labels [N])`` of the dataset's test split."""
        return materialize(self.bundle.test)


def source_from_policy(bits: PolicyFile | Sequence[Sequence[int]] | None = None, *, model: str = "mobilenetv2",
                       width_mult: float = 1.0, dataset: str = "digits", data_root: str | None = None,
                       float_checkpoint: str | None = None, calibration_size: int = 64,
                       uniform: tuple[int, int] | None = None, quantizer: str = "linear",
                       progress: bool = False) -> ExportSource:
    """The float model with ``quantizer`` quantizers, calibrated as the search calibrates, with the policy applied.

    ``bits`` is a :class:`PolicyFile` (its model, dataset and width win over the
    keywords) or a plain ``[[w_bit, a_bit], ...]`` list; ``uniform=(w, a)`` instead
    builds :func:`uniform_bits`. ``quantizer`` is a family of
    :mod:`haq_gym.quant.families`: HAQ's ``linear`` (default) or the LSQ ones at their
    initial steps (no training). ``float_checkpoint=None`` uses the cached default float
    model (trained on first use).
    """
    from haq_gym.search_setup import build_search_setup

    if isinstance(bits, PolicyFile):
        model, dataset = bits.model, bits.dataset
        width_mult = float(bits.model_kwargs.get("width_mult", width_mult))
    setup = build_search_setup(model=model, width_mult=width_mult, dataset=dataset, data_root=data_root,
                               checkpoint=float_checkpoint, calibration_size=calibration_size, quantizer=quantizer,
                               progress=progress)
    names = setup.layer_names
    if isinstance(bits, PolicyFile):
        bits.check_layers(names, min_bit=2, max_bit=8)
        policy = [list(b) for b in bits.bits]
        description = f"policy of {model} (width {width_mult:g}) on {dataset}, {quantizer} quantizers"
    elif uniform is not None:
        policy = uniform_bits(len(names), *uniform)
        description = f"uniform W{uniform[0]}A{uniform[1]} {model} (width {width_mult:g}) on {dataset}, {quantizer} quantizers"
    elif bits is not None:
        policy = [list(b) for b in bits]
        description = f"given policy of {model} (width {width_mult:g}) on {dataset}, {quantizer} quantizers"
    else:
        raise ValueError("give a policy (bits) or uniform=(w_bit, a_bit)")
    apply_policy(setup.layers, policy)
    calib = materialize(setup.bundle.search_train)[0][:calibration_size]
    setup.model.eval()
    return ExportSource(setup.model, list(zip(names, setup.layers)), policy, setup.bundle, calib, setup.layer_infos,
                        description, {"model": model, "width_mult": width_mult, "dataset": dataset,
                                      "quantizer": quantizer, "float_checkpoint": setup.checkpoint})


def recalibrate(source: ExportSource) -> None:
    """Calibrate the source's quantizers again on its calibration images (after swapping quantizers or folding BN)."""
    calibrate(source.model, [m for _, m in source.layers], source.calibration_images)
    source.model.eval()


def source_from_checkpoint(path: str | os.PathLike, *, data_root: str | None = None,
                           calibration_size: int = 64) -> ExportSource:
    """A QAT checkpoint of the finetune module, its quantizers as trained (not calibrated again)."""
    ckpt = load_qat_checkpoint(path)
    meta = dict(ckpt.meta)
    dataset = meta.get("dataset") or ckpt.policy.dataset
    bundle = load_dataset(dataset, data_root)
    calib = materialize(bundle.search_train)[0][:calibration_size]
    layers = list(ckpt.layers)
    ckpt.model.eval()
    infos = measure_layers(ckpt.model, layers, bundle.image_size)
    bits = [[m.w_bit, m.a_bit] for _, m in layers]
    meta.update(checkpoint=os.fspath(path), quantizer=ckpt.family)
    return ExportSource(ckpt.model, layers, bits, bundle, calib, infos,
                        f"QAT checkpoint {os.fspath(path)} ({meta.get('model', '?')} on {dataset})", meta)
