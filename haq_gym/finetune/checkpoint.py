"""QAT checkpoints: a trained quantized model with its policy and quantizer family embedded.

A file is ``{"format": "haq-gym-qat", "version": 1, "policy": <policy JSON>, "family":
..., "meta": {...}, "state_dict": {...}, "training": {...} | None}`` written with
``torch.save`` and read with ``torch.load(weights_only=True)``, with a checksum of every tensor
(:mod:`haq_gym.integrity`) verified on load. The state dict includes
the learned steps (``*.weight_quantizer.step`` ...), so a loaded model quantizes exactly
as it did in training; do not calibrate it again (that would re-initialise the steps).
Its ``state_dict``/``meta`` keys also make it loadable by
:func:`haq_gym.models.load_checkpoint` when the model is float (no learned steps).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from haq_gym.integrity import seal
from haq_gym.models.checkpoint import read_torch_file
from haq_gym.models.spec import ModelSpec
from haq_gym.policy import PolicyFile
from haq_gym.quant import apply_policy, wrap_model
from haq_gym.quant.families import get_family, set_quantizer_family
from haq_gym.quant.qlayers import QuantLayerMixin
from haq_gym.quantized_model import QuantizedModel, check_policy
from haq_gym.util import write_atomic

FORMAT = "haq-gym-qat"
FORMAT_VERSION = 1


@dataclass
class QATCheckpoint:
    """A loaded QAT checkpoint: the model (eval mode, on ``device``) and what describes it."""

    model: nn.Module
    layers: list[tuple[str, QuantLayerMixin]]
    policy: PolicyFile
    family: str
    meta: dict[str, Any]
    training: dict[str, Any] | None


def min_weight_bit(family: str) -> int:
    """Smallest weight bit width ``family`` quantizes to (1 for k-means: two shared values; 2 for symmetric grids)."""
    return get_family(family).min_weight_bit


def quantize_model(model: nn.Module, policy: PolicyFile | None, family: str) -> list[tuple[str, QuantLayerMixin]]:
    """Wrap ``model`` in place with ``family`` quantizers and apply the policy's bits (``None`` = float).

    The policy is checked against the model's layer names and the supported 2..8 bits first.
    """
    get_family(family)  # an unknown name fails before the model is touched
    named = wrap_model(model)
    bits = None if policy is None else check_policy(policy, [n for n, _ in named], min_weight_bit(family), 8)
    layers = [m for _, m in named]
    set_quantizer_family(layers, family)
    if bits is not None:
        apply_policy(layers, bits)
    return named


def build_quantized_model(
    model_name: str, width_mult: float, num_classes: int, policy: PolicyFile | None, family: str
) -> tuple[nn.Module, list[tuple[str, QuantLayerMixin]]]:
    """Untrained wrapped model with ``family`` quantizers and the policy's bits (``None`` = float)."""
    model = ModelSpec(model_name, width_mult=width_mult).build(num_classes)
    return model, quantize_model(model, policy, family)


def save_qat_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    policy: PolicyFile,
    family: str,
    meta: dict[str, Any],
    training: dict[str, Any] | None = None,
) -> None:
    """Write atomically: a crash mid-write leaves the previous file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    record = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "policy": policy.to_dict(),
        "family": family,
        "meta": meta,
        "state_dict": state,
        "training": training,
    }
    write_atomic(path, lambda fh: torch.save(seal(record), fh))


def read_qat_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The raw payload, validated as a QAT checkpoint (clear errors naming the file)."""
    path = os.fspath(path)
    data = read_torch_file(path)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(
            f'checkpoint {path!r} is not a haq-gym QAT checkpoint (no "format": "{FORMAT}"); '
            "a float checkpoint goes to --init-checkpoint instead"
        )
    if data.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"checkpoint {path!r} has QAT format version {data.get('version')}; "
            f"this haq-gym reads version {FORMAT_VERSION}"
        )
    return data


def load_fitting_state(model: nn.Module, state: dict[str, torch.Tensor], path: str | os.PathLike[str]) -> None:
    """``model.load_state_dict(state)``, with a shape mismatch reported as a ``ValueError`` naming the file."""
    own = model.state_dict()
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if wrong:
        k = wrong[0]
        raise ValueError(
            f"checkpoint {os.fspath(path)!r} does not fit the model: {len(wrong)} shape mismatches "
            f"(e.g. {k!r}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)})"
        )
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"checkpoint {os.fspath(path)!r} does not fit the model: {str(err).splitlines()[0]}") from None


def load_qat_checkpoint(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> QATCheckpoint:
    """Rebuild the model a QAT checkpoint describes and load its weights and learned steps."""
    qm = QuantizedModel.from_checkpoint(path, device)
    assert qm.policy is not None
    return QATCheckpoint(qm.model, qm.layers, qm.policy, qm.family, qm.meta, qm.training)
