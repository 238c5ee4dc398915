"""The one builder of a quantized model, shared by the search, the finetune and the export.

``QuantizedModel.from_float`` builds a float network (:class:`~haq_gym.models.spec.ModelSpec`:
built-in, torchvision or the user's own), checks with a traced forward pass that its layers
can be wrapped, loads its float weights (a checkpoint, torchvision's weights, or the cached
default model of a built-in network) and wraps every Conv2d and Linear with quantizers of a
family. ``from_policy`` does the same and applies a policy's bits (validated against the
model); ``from_checkpoint`` rebuilds the model of a QAT checkpoint with its learned steps.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from haq_gym.models import ensure_default_checkpoint, load_checkpoint
from haq_gym.models.inspection import check_quantizable
from haq_gym.models.registry import default_recipe
from haq_gym.models.spec import ModelSpec
from haq_gym.policy import PolicyFile
from haq_gym.quant import apply_policy, wrap_model
from haq_gym.quant.families import get_family, set_quantizer_family
from haq_gym.quant.qlayers import QuantLayerMixin


@dataclass
class QuantizedModel:
    """A wrapped network, its quantizable layers in module order, and where its weights came from."""

    model: nn.Module
    layers: list[tuple[str, QuantLayerMixin]]
    spec: ModelSpec
    num_classes: int
    family: str
    checkpoint: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    policy: PolicyFile | None = None
    training: dict[str, Any] | None = None

    @property
    def layer_names(self) -> list[str]:
        return [n for n, _ in self.layers]

    @property
    def modules(self) -> list[QuantLayerMixin]:
        return [m for _, m in self.layers]

    @classmethod
    def from_float(
        cls,
        spec: ModelSpec,
        num_classes: int,
        image_size: int,
        *,
        checkpoint: str | None = None,
        dataset: str | None = None,
        bundle: Any = None,
        family: str = "linear",
        pretrain_epochs: int | None = None,
        min_accuracy: float | None = None,
        progress: bool = True,
        device: str | torch.device = "cpu",
    ) -> QuantizedModel:
        """The float network with ``family`` quantizers switched off (every layer at ``[-1, -1]``).

        Float weights: ``checkpoint`` if given; else torchvision's ``spec.weights``; else, for a
        built-in network, the cached default model of ``dataset`` (trained on ``bundle`` on first
        use, with ``pretrain_epochs`` and ``min_accuracy`` top-1 required). A torchvision or
        import-path network without a checkpoint or weights is an error: haq-gym does not guess
        a training recipe for it.
        """
        get_family(family)  # an unknown name fails before anything is built
        net = spec.build(num_classes)
        check_quantizable(net, image_size, num_classes, label=f"model {spec.name!r}")
        if checkpoint is not None:
            meta = load_checkpoint(checkpoint, net)
            source: str | None = os.fspath(checkpoint)
        elif spec.weights is not None:
            meta, source = {"weights": spec.weights}, f"{spec.name} weights={spec.weights}"
        elif spec.is_builtin:
            if dataset is None or bundle is None:
                raise ValueError(f"the default float {spec.name} needs its dataset to train on; pass checkpoint=")
            recipe = default_recipe(spec.name, dataset)
            if pretrain_epochs is not None:
                recipe = replace(recipe, epochs=pretrain_epochs)
            path, meta = ensure_default_checkpoint(
                spec.name,
                spec.width_mult,
                dataset,
                net,
                bundle,
                recipe=recipe,
                progress=progress,
                min_accuracy=min_accuracy,
                device=device,
            )
            source = os.fspath(path)
        else:
            raise ValueError(
                f"model {spec.name!r} needs float weights: pass checkpoint= (a state dict saved with "
                "torch.save) or, for torchvision models, weights= (e.g. DEFAULT); haq-gym trains "
                "default float models only for its built-in networks"
            )
        net.to(torch.device(device))
        named = wrap_model(net)
        set_quantizer_family([m for _, m in named], family)
        return cls(net, named, spec, num_classes, family, source, dict(meta))

    @classmethod
    def from_policy(
        cls,
        policy: PolicyFile | Sequence[Sequence[int]] | None,
        spec: ModelSpec,
        num_classes: int,
        image_size: int,
        *,
        min_bit: int = 2,
        max_bit: int = 8,
        **float_kwargs: Any,
    ) -> QuantizedModel:
        """:meth:`from_float` with the policy's bits applied (``None`` keeps it float).

        A :class:`PolicyFile` is checked against the model's layer names, a plain HAQ strategy
        list ``[[w_bit, a_bit], ...]`` against its length; both against ``min_bit..max_bit``.
        """
        qm = cls.from_float(spec, num_classes, image_size, **float_kwargs)
        if policy is not None:
            bits = check_policy(policy, qm.layer_names, min_bit, max_bit)
            apply_policy(qm.modules, bits)
            qm.policy = policy if isinstance(policy, PolicyFile) else None
        return qm

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike[str], device: str | torch.device = "cpu") -> QuantizedModel:
        """The model a QAT checkpoint describes, with its weights and learned steps loaded (eval mode)."""
        from haq_gym.finetune.checkpoint import load_fitting_state, read_qat_file

        path = os.fspath(path)
        data = read_qat_file(path)
        policy = PolicyFile.from_dict(data["policy"], source=f"policy in {path!r}")
        meta = dict(data.get("meta") or {})
        try:
            spec = ModelSpec.from_policy_kwargs(meta["model"], {**meta, "width_mult": float(meta["width_mult"])})
            classes = int(meta["num_classes"])
        except KeyError as err:
            raise ValueError(f"checkpoint {path!r} lacks meta field {err}") from None
        family = get_family(data["family"]).name
        model = replace(spec, weights=None).build(classes)
        named = wrap_model(model)
        set_quantizer_family([m for _, m in named], family)
        bits = check_policy(policy, [n for n, _ in named], get_family(family).min_weight_bit, 8)
        apply_policy([m for _, m in named], bits)
        own, theirs = set(model.state_dict()), set(data["state_dict"])
        if own != theirs:
            missing, extra = sorted(own - theirs), sorted(theirs - own)
            raise ValueError(
                f"checkpoint {path!r} does not fit {spec.name} with {family} quantizers: "
                f"{len(missing)} missing keys {missing[:2]}, {len(extra)} unexpected keys {extra[:2]}"
            )
        load_fitting_state(model, data["state_dict"], path)
        model.to(device).eval()
        return cls(model, named, spec, classes, family, path, meta, policy, data.get("training"))


def check_policy(
    policy: PolicyFile | Sequence[Sequence[int]], layer_names: Sequence[str], min_bit: int, max_bit: int
) -> list[list[int]]:
    """The ``[[w_bit, a_bit], ...]`` of a policy file or HAQ strategy list, after checking it fits the model."""
    if isinstance(policy, PolicyFile):
        policy.check_layers(layer_names, min_bit=min_bit, max_bit=max_bit)
        return [list(b) for b in policy.bits]
    bits = [list(b) for b in policy]
    if len(bits) != len(layer_names):
        raise ValueError(
            f"the strategy lists {len(bits)} [w_bit, a_bit] pairs but the model has "
            f"{len(layer_names)} quantizable layers"
        )
    for name, pair in zip(layer_names, bits, strict=True):
        if len(pair) != 2 or not all(isinstance(b, int) and not isinstance(b, bool) for b in pair):
            raise ValueError(f"layer {name!r}: expected [w_bit, a_bit] integers, got {pair!r}")
        for b in pair:
            if b != -1 and not min_bit <= b <= max_bit:
                raise ValueError(f"layer {name!r} has {b} bits; supported range is {min_bit}..{max_bit} (or -1)")
    return bits
