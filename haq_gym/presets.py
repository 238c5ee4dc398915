"""Named sets of env keywords; ``preset="haq"`` reproduces the original HAQ code's arithmetic.

Every behaviour of the original (mit-han-lab/haq) that haq-gym changes by default is also
its own keyword; a preset only fills them in. docs/haq_fidelity.md lists every difference
with its keyword, or why none is offered.

Rule for a keyword given together with a preset: left at the env's default, it takes the
preset's value; set to the preset's value, fine; set to anything else, the env refuses
with a :class:`PresetConflict` naming the keyword (an explicit value equal to the env's
default cannot be told apart from an omitted one, so the preset wins there).

Sizes are not part of a preset: HAQ's script calibrates on, and finetunes with, batches
of 128 images (``--data_bsize``); pass ``calibration_size=128 finetune_batch_size=128`` to
match it on a dataset with enough training images.

Bugs of the original that only confuse (the stale reset observation, its flipped
weight/activation flag) stay fixed under the preset: they change what the agent sees,
never the policy's cost or accuracy.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

HAQ_ENV_PRESET: dict[str, Any] = {
    "unquantized_cost": "haq",  # a_bit=-1 costed at the table's column -2 (7 bits)
    "quantizer": "haq",  # KL-J / max clip, 6.0 cap, trainable activation range
    "calibration": "per_episode",  # a fresh augmented train batch before every evaluation
    "finetune_epochs": 1,  # HAQ's finetune_flag (on by default): one epoch per episode
    "finetune_steps": 0,  # (the epoch sets the steps)
    "finetune_lr": 1e-3,
    "reward_accuracy": "finetune_running",  # running train-mode top-1 vs the float model on train images
    "enforcement": "haq",  # the round-robin wall
    "pin_first_last": "wall",  # first/last pinned only when the wall runs
    "fc_feature_map": "in_features",  # an FC layer's feature-map feature is in_features
}

HAQ_AGENT_PRESET: dict[str, dict[str, Any]] = {
    "haq-ddpg": {"replay_unit": "layer"},  # replay of rmsize x number of layers entries
}

ENV_PRESETS: dict[str, dict[str, Any]] = {"haq": HAQ_ENV_PRESET}
AGENT_PRESETS: dict[str, dict[str, dict[str, Any]]] = {"haq": HAQ_AGENT_PRESET}


class PresetConflict(ValueError):
    """A keyword contradicts the preset it was given with."""


def check_preset(name: str | None) -> str | None:
    if name is not None and name not in ENV_PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(ENV_PRESETS)} (or None)")
    return name


def keyword_defaults(fn: Callable[..., Any]) -> dict[str, Any]:
    """The keyword defaults of ``fn`` (an env's ``__init__``)."""
    return {
        k: p.default for k, p in inspect.signature(fn).parameters.items() if p.default is not inspect.Parameter.empty
    }


def apply_preset(name: str | None, given: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``given`` with the preset's values filled in where a keyword was left at its default.

    Raises :class:`PresetConflict` for a keyword set to a value that is neither its default
    nor the preset's.
    """
    settings = dict(given)
    preset = check_preset(name)
    if preset is None:
        return settings
    for key, value in ENV_PRESETS[preset].items():
        if key not in settings:
            continue
        current = settings[key]
        if current == value:
            continue
        if current != defaults.get(key):
            raise PresetConflict(
                f"preset={name!r} sets {key}={value!r}, but {key}={current!r} was given: drop the "
                f"keyword, or drop the preset and pass the behaviours you want one by one"
            )
        settings[key] = value
    return settings


def agent_preset(name: str | None, algo: str, hyperparams: Mapping[str, Any]) -> dict[str, Any]:
    """The agent hyperparameters ``preset`` implies for ``algo``, merged into ``hyperparams`` (conflicts refused)."""
    merged = dict(hyperparams)
    preset = check_preset(name)
    if preset is None:
        return merged
    for key, value in AGENT_PRESETS[preset].get(algo, {}).items():
        if key in merged and merged[key] != value:
            raise PresetConflict(
                f"preset={name!r} sets the {algo} hyperparameter {key}={value!r}, but "
                f"{key}={merged[key]!r} was given: drop one of them"
            )
        merged[key] = value
    return merged
