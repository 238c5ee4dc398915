"""Which float network to build: a built-in name, a torchvision classifier, or a user's own builder.

``model=`` accepts three forms:

- a built-in name (``mobilenetv2``, ``mobilenetv3small``, ``resnet18``, ``resnet20``: the
  CIFAR-style 32x32 variants, with ``width_mult``);
- ``torchvision:<name>``, any classification model of ``torchvision.models`` (e.g.
  ``torchvision:mobilenet_v2``, ``torchvision:resnet50``), built with
  ``torchvision.models.get_model`` and ``weights`` passed through (``"DEFAULT"``,
  ``"IMAGENET1K_V1"``, ... or ``None`` for random initialisation);
- ``package.module:builder``, a function of the user's that returns an ``nn.Module``;
  it receives ``model_kwargs`` as keywords, and ``num_classes`` too when its signature
  takes it and ``model_kwargs`` does not set it.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from haq_gym.models.registry import build_model, model_names

TORCHVISION_PREFIX = "torchvision:"


class ModelSpecError(ValueError):
    """A model that cannot be built as given (bad name, import path, builder or weights)."""


@dataclass(frozen=True)
class ModelSpec:
    """A float network by name, with the keywords that build it (everything a checkpoint's model needs)."""

    name: str
    width_mult: float = 1.0
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    weights: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ModelSpecError(f"model must be a non-empty string, got {self.name!r}")
        if self.is_builtin:
            if self.kwargs:
                raise ModelSpecError(
                    f"model_kwargs are for torchvision or import-path models; the built-in "
                    f"{self.name!r} takes only width_mult"
                )
            if self.weights is not None:
                raise ModelSpecError(
                    f"weights= is for torchvision models; the built-in {self.name!r} "
                    "loads its float weights from checkpoint="
                )
        elif self.kind == "import":
            if self.weights is not None:
                raise ModelSpecError(
                    "weights= is for torchvision models; an import-path model loads its float weights from checkpoint="
                )
            if self.width_mult != 1.0:
                raise ModelSpecError(
                    "width_mult is for the built-in models; pass it to your builder through model_kwargs"
                )
        elif self.kind == "torchvision" and self.width_mult != 1.0:
            raise ModelSpecError(
                "width_mult is for the built-in models; pass torchvision's own keywords through "
                "model_kwargs (e.g. model_kwargs={'width_mult': 0.5} for mobilenet_v2)"
            )
        if not isinstance(self.kwargs, Mapping):
            raise ModelSpecError(f"model_kwargs must be a mapping of keywords, got {type(self.kwargs).__name__}")

    @property
    def kind(self) -> str:
        """``builtin``, ``torchvision`` or ``import``."""
        if self.name.startswith(TORCHVISION_PREFIX):
            return "torchvision"
        if ":" in self.name:
            return "import"
        return "builtin"

    @property
    def is_builtin(self) -> bool:
        return self.kind == "builtin"

    def build(self, num_classes: int) -> nn.Module:
        """An ``nn.Module`` for ``num_classes`` classes (float, torchvision weights loaded when asked)."""
        if self.kind == "builtin":
            return build_model(self.name, num_classes=num_classes, width_mult=self.width_mult)
        if self.kind == "torchvision":
            return _build_torchvision(
                self.name[len(TORCHVISION_PREFIX) :], num_classes, dict(self.kwargs), self.weights
            )
        return _build_imported(self.name, num_classes, dict(self.kwargs))

    def to_policy_kwargs(self, num_classes: int) -> dict[str, Any]:
        """What a policy file records under ``model_kwargs`` to rebuild this network."""
        out: dict[str, Any] = {"width_mult": self.width_mult, "num_classes": num_classes}
        if self.kwargs:
            out["builder_kwargs"] = dict(self.kwargs)
        if self.weights is not None:
            out["weights"] = self.weights
        return out

    @classmethod
    def from_policy_kwargs(cls, name: str, model_kwargs: Mapping[str, Any]) -> ModelSpec:
        """The inverse of :meth:`to_policy_kwargs` (old policy files hold only ``width_mult``)."""
        return cls(
            name,
            width_mult=float(model_kwargs.get("width_mult", 1.0)),
            kwargs=dict(model_kwargs.get("builder_kwargs") or {}),
            weights=model_kwargs.get("weights"),
        )


def describe_model_names() -> str:
    """One line listing the accepted forms of ``model=``, for error messages and help."""
    return (
        f"a built-in name ({', '.join(model_names())}), 'torchvision:<name>' (e.g. torchvision:mobilenet_v2) "
        "or an import path 'package.module:builder'"
    )


def _build_torchvision(name: str, num_classes: int, kwargs: dict[str, Any], weights: str | None) -> nn.Module:
    from haq_gym.compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    import torchvision.models as tvm

    available = tvm.list_models(module=tvm)
    if name not in available:
        examples = ", ".join(n for n in available if n in ("mobilenet_v2", "resnet50", "resnet18", "efficientnet_b0"))
        raise ModelSpecError(
            f"torchvision has no classification model {name!r}; "
            f"examples: {examples} "
            f"({len(available)} in torchvision.models.list_models(torchvision.models))"
        )
    kwargs.setdefault("num_classes", num_classes)
    try:
        model: nn.Module = tvm.get_model(name, weights=weights, **kwargs)
        return model
    except (ValueError, TypeError, KeyError) as err:
        raise ModelSpecError(f"torchvision:{name} with weights={weights!r} and model_kwargs {kwargs}: {err}") from None


def _build_imported(path: str, num_classes: int, kwargs: dict[str, Any]) -> nn.Module:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ModelSpecError(f"model {path!r}: an import path is 'package.module:builder'")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # noqa: BLE001 - a user's module can fail to import in any way: report it, whatever it is
        raise ModelSpecError(
            f"model {path!r}: module {module_name!r} does not import: {type(err).__name__}: {err}"
        ) from None
    builder: Any = module
    for part in attr.split("."):
        if not hasattr(builder, part):
            raise ModelSpecError(f"model {path!r}: module {module_name!r} has no attribute {attr!r}")
        builder = getattr(builder, part)
    if not callable(builder):
        raise ModelSpecError(f"model {path!r}: {attr!r} is a {type(builder).__name__}, not a callable builder")
    if "num_classes" not in kwargs and _accepts(builder, "num_classes"):
        kwargs["num_classes"] = num_classes
    try:
        model = builder(**kwargs)
    except TypeError as err:
        raise ModelSpecError(f"model {path!r}: calling the builder with model_kwargs {kwargs} failed: {err}") from None
    if not isinstance(model, nn.Module):
        raise ModelSpecError(
            f"model {path!r}: the builder returned a {type(model).__name__}, expected a torch.nn.Module"
        )
    return model


def _accepts(fn: Any, keyword: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return keyword in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
