"""Typed checks of user-given settings (flags, env keywords, seeds), run before anything is built or written.

Values from ``key=value`` flags arrive as YAML scalars, so ``min_bit=four`` is a string and
``min_bit=2.5`` a float; comparing them later fails with a Python error far from the flag.
These checks say what was expected in one line (a :class:`ValueError`), and the envs call
:func:`check_env_keywords` themselves, so ``gym.make`` and the command line give the same
message. The command-line tools call them before they create a run folder or train.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any, Literal, overload

MAX_SEED = 2**32 - 1
MAX_WIDTH_MULT = 4.0
BIT_RANGE = (1, 8)


def _shown(value: Any) -> str:
    return repr(value) if not isinstance(value, str) else f"{value!r} (a string)"


@overload
def check_int(
    name: str, value: Any, low: int | None = None, high: int | None = None, allow_none: Literal[False] = False
) -> int: ...
@overload
def check_int(
    name: str, value: Any, low: int | None = None, high: int | None = None, *, allow_none: bool
) -> int | None: ...
def check_int(
    name: str, value: Any, low: int | None = None, high: int | None = None, allow_none: bool = False
) -> int | None:
    """``value`` as an int in ``[low, high]`` (bools and floats such as 2.5 are refused)."""
    if value is None and allow_none:
        return None
    ok_type = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    in_range = ok_type and (low is None or value >= low) and (high is None or value <= high)
    if not in_range:
        bounds = _bounds(low, high, closed=True)
        raise ValueError(f"{name} must be an integer{bounds}{' or None' if allow_none else ''}, got {_shown(value)}")
    return int(value)


@overload
def check_number(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    allow_none: Literal[False] = False,
) -> float: ...
@overload
def check_number(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    *,
    allow_none: bool,
) -> float | None: ...
def check_number(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    allow_none: bool = False,
) -> float | None:
    """``value`` as a finite float in ``[low, high]`` (``(low, high]`` with ``low_open``); bools and strings refused."""
    if value is None and allow_none:
        return None
    ok_type = isinstance(value, numbers.Real) and not isinstance(value, bool)
    ok = ok_type and math.isfinite(float(value))
    if ok and low is not None:
        ok = float(value) > low if low_open else float(value) >= low
    if ok and high is not None:
        ok = float(value) <= high
    if not ok:
        bounds = _bounds(low, high, closed=not low_open)
        raise ValueError(
            f"{name} must be a finite number{bounds}{' or None' if allow_none else ''}, got {_shown(value)}"
        )
    return float(value)


def _bounds(low: float | None, high: float | None, closed: bool) -> str:
    def shown(x: float) -> str:
        return str(x) if isinstance(x, int) else f"{x:g}"

    if low is not None and high is not None:
        return f" in {'[' if closed else '('}{shown(low)}, {shown(high)}]"
    if low is not None:
        return f" {'>=' if closed else '>'} {shown(low)}"
    if high is not None:
        return f" <= {shown(high)}"
    return ""


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {_shown(value)}")
    return value


def check_str(name: str, value: Any, allow_none: bool = False) -> str | None:
    if value is None and allow_none:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string{' or None' if allow_none else ''}, got {value!r}")
    return value


def check_seed(value: Any, name: str = "--seed") -> int:
    """A seed every RNG of the project takes: an integer in 0..2**32-1."""
    return check_int(name, value, 0, MAX_SEED)


def check_width_mult(value: Any, name: str = "width_mult") -> float:
    """A model width multiplier in (0, 4]; 0 would build (and cache) a degenerate model."""
    return check_number(name, value, 0.0, MAX_WIDTH_MULT, low_open=True)


def _budget(name: str) -> Callable[[Any], Any]:
    return lambda v: check_number(name, v, 0.0, 1.0, low_open=True, allow_none=True)


def _optional_path(name: str) -> Callable[[Any], Any]:
    """A path keyword (``str``), or an already-built object passed from Python (arrays, accelerator models)."""

    def check(v: Any) -> Any:
        if isinstance(v, (bool, numbers.Number)) or (isinstance(v, str) and not v):
            raise ValueError(f"{name} must be a path (a string) or None, got {_shown(v)}")
        return v

    return check


# Every keyword of the haq-gym envs that a user can set, with its check.
ENV_KEYWORD_CHECKS: dict[str, Callable[[Any], Any]] = {
    "model": lambda v: check_str("model", v),
    "width_mult": check_width_mult,
    "dataset": lambda v: check_str("dataset", v),
    "data_root": lambda v: check_str("data_root", v, allow_none=True),
    "download": lambda v: check_bool("download", v),
    "checkpoint": lambda v: check_str("checkpoint", v, allow_none=True),
    "pretrain_epochs": lambda v: check_int("pretrain_epochs", v, 1, allow_none=True),
    "val_size": lambda v: check_int("val_size", v, 1, allow_none=True),
    "train_size": lambda v: check_int("train_size", v, 1, allow_none=True),
    "calibration_size": lambda v: check_int("calibration_size", v, 1),
    "latency_budget": _budget("latency_budget"),
    "flash_budget": _budget("flash_budget"),
    "size_budget": lambda v: check_number("size_budget", v, 0.0, 1.0, low_open=True),
    "float_bit": lambda v: _check_float_bit(v),
    "min_bit": lambda v: check_int("min_bit", v, *BIT_RANGE),
    "max_bit": lambda v: check_int("max_bit", v, *BIT_RANGE),
    "latency_table": _optional_path("latency_table"),
    "hardware": _optional_path("hardware"),
    "action_mode": lambda v: check_str("action_mode", v),
    "enforcement": lambda v: check_str("enforcement", v),
    "reward": lambda v: check_str("reward", v),
    "finetune_steps": lambda v: check_int("finetune_steps", v, 0),
    "finetune_lr": lambda v: check_number("finetune_lr", v, 0.0, low_open=True),
    "pin_first_last": lambda v: _check_pin_mode(v),
    "eval_batch_size": lambda v: check_int("eval_batch_size", v, 1),
    "device": lambda v: _check_device(v),
    "quantizer": lambda v: check_str("quantizer", v),
    "progress": lambda v: check_bool("progress", v),
    "render_mode": lambda v: check_str("render_mode", v, allow_none=True),
    "preset": lambda v: check_str("preset", v, allow_none=True),
    "unquantized_cost": lambda v: check_str("unquantized_cost", v),
    "calibration": lambda v: check_str("calibration", v),
    "finetune_epochs": lambda v: check_int("finetune_epochs", v, 0),
    "finetune_batch_size": lambda v: check_int("finetune_batch_size", v, 1),
    "reward_accuracy": lambda v: check_str("reward_accuracy", v),
    "use_top5": lambda v: check_bool("use_top5", v),
    "fc_feature_map": lambda v: check_str("fc_feature_map", v),
}


def _check_pin_mode(value: Any) -> bool | str:
    if value == "wall":
        return "wall"
    try:
        return check_bool("pin_first_last", value)
    except ValueError:
        raise ValueError(f"pin_first_last must be True, False or 'wall', got {_shown(value)}") from None


def _check_float_bit(value: Any) -> int:
    """The cost model's own check (2..8: the reference policy's weights need 2 bits)."""
    from haq_gym.cost.cost_model import check_float_bit

    return check_float_bit(value)


def _check_device(value: Any) -> str:
    from haq_gym.runtime import torch_device

    check_str("device", value)
    device = torch_device(value)
    if device.type == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ValueError(f"device {value!r}: this torch build sees no CUDA device (use cpu or auto)")
    return str(value)


def check_env_keywords(keywords: Mapping[str, Any]) -> None:
    """Raise a one-line ``ValueError`` for the first env keyword of the wrong type or out of range.

    Keywords without a check (``setup``) pass; ``min_bit <= max_bit`` is checked too.
    """
    for key, value in keywords.items():
        check = ENV_KEYWORD_CHECKS.get(key)
        if check is not None:
            check(value)
    low, high = keywords.get("min_bit"), keywords.get("max_bit")
    if low is not None and high is not None and low > high:
        raise ValueError(f"min_bit must not exceed max_bit, got min_bit={low}, max_bit={high}")


def check_env_kwargs(env_id: str, kwargs: Mapping[str, Any]) -> None:
    """What ``gym.make(env_id, **kwargs)`` would refuse first, without building anything: names, types, ranges.

    Unknown names are listed against the env class's keywords; values go through
    :func:`check_env_keywords` (the env's own check).
    """
    import gymnasium as gym
    from gymnasium.envs.registration import load_env_creator

    spec = gym.spec(env_id)
    creator = load_env_creator(spec.entry_point) if isinstance(spec.entry_point, str) else spec.entry_point
    if creator is None:
        raise ValueError(f"{env_id} is registered without an entry point")
    params = inspect.signature(creator).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        taken = {name for name, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL}
        unknown = sorted(set(kwargs) - taken)
        if unknown:
            raise ValueError(
                f"{env_id} does not take keyword(s) {', '.join(unknown)}; "
                f"it takes {', '.join(sorted(taken - {'setup'}))}"
            )
    check_env_keywords({**spec.kwargs, **kwargs})


def check_like_defaults(owner: str, values: Mapping[str, Any], defaults: Mapping[str, Any]) -> None:
    """Each value must have the type of its default: int, float (an int is fine) or bool.

    For settings whose only contract is their default's type (agent hyperparameters):
    ``warmup=abc`` is refused here instead of failing inside the agent after the run folder exists.
    """
    for key, value in values.items():
        default = defaults.get(key, inspect.Parameter.empty)
        if default is inspect.Parameter.empty or default is None or value is None:
            continue
        name = f"{owner} hyperparameter {key}"
        if isinstance(default, bool):
            check_bool(name, value)
        elif isinstance(default, numbers.Integral):
            check_int(name, value)
        elif isinstance(default, numbers.Real):
            check_number(name, value)
        # A string default is often one choice of a union (SB3's ``ent_coef="auto"`` also takes a float): not checked.


def check_policy_fits(
    policy: Any, model_name: str, width_mult: float, num_classes: int | None = None, min_bit: int = 2, max_bit: int = 8
) -> None:
    """Refuse a policy that does not fit ``model_name`` at ``width_mult`` before any model is trained or loaded.

    Builds the untrained network (a fraction of a second), compares its quantizable layers
    with the policy's, checks the bit range, and, when ``num_classes`` is given, the
    policy's ``model_kwargs.num_classes``.
    """
    from haq_gym.models import build_model
    from haq_gym.quant import wrap_model

    check_width_mult(width_mult, "width_mult")
    declared = policy.model_kwargs.get("num_classes")
    if num_classes is not None and declared is not None and declared != num_classes:
        raise ValueError(
            f"the policy's model_kwargs.num_classes is {declared!r}, but dataset {policy.dataset!r} "
            f"has {num_classes} classes"
        )
    names = [
        name for name, _ in wrap_model(build_model(model_name, num_classes=num_classes or 10, width_mult=width_mult))
    ]
    policy.check_layers(names, min_bit=min_bit, max_bit=max_bit)


__all__ = [
    "ENV_KEYWORD_CHECKS",
    "check_bool",
    "check_env_keywords",
    "check_env_kwargs",
    "check_int",
    "check_like_defaults",
    "check_number",
    "check_policy_fits",
    "check_seed",
    "check_str",
    "check_width_mult",
]
