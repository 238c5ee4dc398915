"""Everything a search needs, built from plain settings: data, float model, quantized wrappers, costs, evaluator.

This is the one place where the data flow config -> model + data -> evaluator is wired;
the environments receive the result and add the MDP on top.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn
from tqdm.auto import tqdm

from haq_gym.cost import BitSerialAccelerator, CostModel, LayerInfo, load_table, measure_layers
from haq_gym.data import DataBundle, load_dataset, materialize
from haq_gym.evaluation import AccuracySettings, FinetuneSettings, PolicyEvaluator
from haq_gym.models.spec import ModelSpec
from haq_gym.quant.qlayers import QuantLayerMixin
from haq_gym.quantized_model import QuantizedModel
from haq_gym.runtime import torch_device


@dataclass
class SearchSetup:
    """The built pieces of one search problem."""

    model_name: str
    width_mult: float
    dataset: str
    bundle: DataBundle
    model: nn.Module
    layer_names: list[str]
    layers: list[QuantLayerMixin]
    layer_infos: list[LayerInfo]
    cost_model: CostModel
    evaluator: PolicyEvaluator
    reference_accuracy: float
    checkpoint: str
    checkpoint_meta: dict[str, Any] = field(default_factory=dict)
    latency_source: str = ""
    spec: ModelSpec | None = None

    def policy_model_kwargs(self) -> dict[str, Any]:
        """What a policy file records under ``model_kwargs`` to rebuild this model, plus a variable input size."""
        spec = self.spec or ModelSpec(self.model_name, width_mult=self.width_mult)
        out = spec.to_policy_kwargs(self.bundle.num_classes)
        if self.dataset == "imagefolder":
            out["image_size"] = self.bundle.image_size
        return out


def build_search_setup(
    *,
    model: str = "mobilenetv2",
    width_mult: float = 1.0,
    dataset: str = "digits",
    data_root: str | None = None,
    download: bool = False,
    checkpoint: str | None = None,
    val_size: int | None = None,
    train_size: int | None = None,
    calibration_size: int = 64,
    latency_table: str | np.ndarray | None = None,
    hardware: str | BitSerialAccelerator | None = None,
    float_bit: int = 8,
    finetune_steps: int = 0,
    finetune_lr: float = 1e-3,
    eval_batch_size: int = 256,
    pretrain_epochs: int | None = None,
    device: str = "cpu",
    quantizer: str = "linear",
    progress: bool = True,
    model_kwargs: dict[str, Any] | None = None,
    weights: str | None = None,
    image_size: int | None = None,
    unquantized_cost: str = "float_bit",
    calibration: str = "once",
    finetune_epochs: int = 0,
    finetune_batch_size: int = 64,
    reward_accuracy: str = "val",
    use_top5: bool = False,
) -> SearchSetup:
    """Build a :class:`SearchSetup`.

    ``checkpoint=None`` uses the cached default float model (trained on first use, see
    :func:`haq_gym.models.ensure_default_checkpoint`); ``pretrain_epochs`` changes its
    recipe (tests use tiny values). ``latency_table`` is a ``.npy`` path or an array in
    HAQ's format; ``None`` generates one with the analytic bit-serial accelerator
    (``hardware``: a YAML path or :class:`BitSerialAccelerator`; ``None`` = defaults).
    ``quantizer`` names the quantizer family policies are evaluated with: ``linear`` (HAQ's),
    or ``lsq``/``lsq+``/``pot`` (HAQ-LSQ: the learned-step quantizers the finetune trains,
    at their LSQ initial steps for each policy's bits, so the search sees the finetune's grid),
    or ``haq`` (HAQ's own linear quantizer, :mod:`haq_gym.quant.haq_linear`).
    ``model`` is a built-in name, ``torchvision:<name>`` (with ``weights``) or an import path
    ``package.module:builder`` (with ``model_kwargs``); see :mod:`haq_gym.models.spec`.
    ``image_size`` is the dataset's input size where it can change (``imagefolder``: 224).

    HAQ's measurement, piece by piece: ``unquantized_cost="haq"`` (a ``-1`` bit width costed
    at the table's column -2), ``calibration="per_episode"``, ``finetune_epochs`` (whole
    passes over the search-train images, ``finetune_batch_size`` per step; exclusive with
    ``finetune_steps``), ``reward_accuracy="finetune_running"`` and ``use_top5`` (see
    :class:`~haq_gym.evaluation.AccuracySettings`).
    """
    if calibration_size < 1:
        raise ValueError(f"calibration_size must be at least 1, got {calibration_size}")
    if finetune_steps < 0 or finetune_epochs < 0 or finetune_batch_size < 1:
        raise ValueError(
            f"need finetune_steps >= 0, finetune_epochs >= 0 and finetune_batch_size >= 1, got "
            f"{finetune_steps}, {finetune_epochs}, {finetune_batch_size}"
        )
    if finetune_steps and finetune_epochs:
        raise ValueError(
            f"give finetune_steps or finetune_epochs, not both (got {finetune_steps} and {finetune_epochs})"
        )
    accuracy = AccuracySettings(source=reward_accuracy, top5=bool(use_top5), calibration=calibration)
    stages = tqdm(
        total=5,
        desc="search setup: reading the data",
        unit="stage",
        disable=not progress,
        bar_format="{desc} [{n_fmt}/{total_fmt} stages, {elapsed}]",
    )
    bundle = load_dataset(
        dataset, data_root, val_size=val_size, train_size=train_size, download=download, image_size=image_size
    )
    _next_stage(stages, "loading the float model (trained on first use)")
    spec = ModelSpec(model, width_mult=width_mult, kwargs=dict(model_kwargs or {}), weights=weights)
    min_acc = None if pretrain_epochs is not None else 95.0 if dataset == "digits" else None
    qm = QuantizedModel.from_float(
        spec,
        bundle.num_classes,
        bundle.image_size,
        checkpoint=checkpoint,
        dataset=dataset,
        bundle=bundle,
        family=quantizer,
        pretrain_epochs=pretrain_epochs,
        min_accuracy=min_acc,
        progress=progress,
        device=torch_device(device),
    )
    net, named, meta = qm.model, qm.layers, qm.meta
    checkpoint = qm.checkpoint or ""
    names = qm.layer_names
    layers = qm.modules
    _next_stage(stages, "layer shapes and the latency table")
    infos = measure_layers(net, named, bundle.image_size)

    if isinstance(latency_table, (str, os.PathLike)):
        table = load_table(latency_table, len(layers))
        source = os.fspath(latency_table)
    elif isinstance(latency_table, np.ndarray):
        table, source = latency_table, "array"
    elif latency_table is None:
        accel = (
            hardware
            if isinstance(hardware, BitSerialAccelerator)
            else (BitSerialAccelerator.from_yaml(hardware) if hardware is not None else BitSerialAccelerator())
        )
        table = accel.table(infos)
        source = f"analytic bit-serial accelerator {accel.to_dict()}"
    else:
        raise TypeError(f"latency_table must be a .npy path, an array or None, got {type(latency_table).__name__}")
    cost_model = CostModel(infos, table, float_bit=float_bit, unquantized_cost=unquantized_cost)

    _next_stage(stages, "loading the validation images")
    val_x, val_y = materialize(bundle.search_val, num_workers=bundle.num_workers)
    train_x, train_y = materialize(bundle.search_train, num_workers=bundle.num_workers)
    if calibration_size > len(train_x):
        raise ValueError(f"calibration_size {calibration_size} exceeds the {len(train_x)} search-train images")
    if finetune_epochs:
        finetune_steps = finetune_epochs * max(len(train_x) // finetune_batch_size, 1)
    finetune = FinetuneSettings(steps=finetune_steps, lr=finetune_lr, batch_size=finetune_batch_size)
    needs_train = finetune_steps > 0 or accuracy.source != "val" or accuracy.calibration != "once"
    evaluator = PolicyEvaluator(
        net,
        layers,
        val_x,
        val_y,
        train_x[:calibration_size],
        batch_size=eval_batch_size,
        finetune=finetune,
        train_images=train_x if needs_train else None,
        train_labels=train_y if needs_train else None,
        augment=bundle.augment,
        accuracy=accuracy,
    )
    _next_stage(stages, "the float model's validation accuracy")
    reference = evaluator.float_accuracy()
    stages.set_description("search setup: done")
    stages.update(1)
    stages.close()
    return SearchSetup(
        model,
        width_mult,
        dataset,
        bundle,
        net,
        names,
        layers,
        infos,
        cost_model,
        evaluator,
        reference,
        checkpoint,
        meta,
        source,
        spec,
    )


def _next_stage(bar: tqdm[Any], description: str) -> None:
    """Count the finished stage and name the next one (the first ``gym.make`` can take minutes)."""
    bar.update(1)
    bar.set_description(f"search setup: {description}")
