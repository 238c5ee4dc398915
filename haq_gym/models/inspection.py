"""Check that a float network can be searched: one traced forward pass at the dataset's input size.

The quantized wrappers replace ``nn.Conv2d`` and ``nn.Linear`` modules; whatever computes a
convolution or a matrix product with a learned weight in any other way would silently stay
float, and a layer used twice (weight sharing) would get two decisions for one tensor. Both
are refused here with an error naming the layer, before any search starts.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

QUANTIZABLE = (nn.Conv2d, nn.Linear)
_WEIGHTED_OPS = {
    F.conv1d: "conv1d",
    F.conv2d: "conv2d",
    F.conv3d: "conv3d",
    F.linear: "linear",
    torch.conv2d: "conv2d",
    torch.conv1d: "conv1d",
    torch.conv3d: "conv3d",
    F.conv_transpose2d: "conv_transpose2d",
}


class UnsupportedModelError(ValueError):
    """The network has a layer the quantized wrappers cannot handle, or cannot take the input size."""


class _WeightedOpWatch(TorchFunctionMode):
    """Records convolutions/linear maps whose weight is a parameter, called outside a Conv2d/Linear module."""

    def __init__(self, stack: list[tuple[str, nn.Module]], names: dict[int, str]) -> None:
        super().__init__()
        self.stack = stack
        self.names = names
        self.found: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        op = _WEIGHTED_OPS.get(func)
        if op is not None:
            weight = args[1] if len(args) > 1 else kwargs.get("weight")
            inside = self.stack and isinstance(self.stack[-1][1], QUANTIZABLE)
            if isinstance(weight, nn.Parameter) and not inside:
                where = self.stack[-1][0] if self.stack else "<model>"
                param = self.names.get(id(weight), "an unnamed parameter")
                self.found.append(f"a functional {op} in module {where or '<root>'!r} (weight {param})")
        return func(*args, **kwargs)


@contextmanager
def _module_stack(model: nn.Module, stack: list[tuple[str, nn.Module]], calls: dict[str, int]) -> Iterator[None]:
    handles = []
    for name, module in model.named_modules():

        def pre(m: nn.Module, inp: object, name: str = name) -> None:
            stack.append((name, m))
            calls[name] = calls.get(name, 0) + 1

        def post(m: nn.Module, inp: object, out: object) -> None:
            stack.pop()

        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def check_quantizable(
    model: nn.Module, image_size: int, num_classes: int | None = None, label: str = "the model"
) -> list[tuple[str, nn.Module]]:
    """The model's Conv2d and Linear layers in module order, after checking that they can be wrapped.

    Raises :class:`UnsupportedModelError` naming the layer for: a Conv2d/Linear reachable under
    two names or called more than once per forward pass (weight sharing), a parameter shared by
    two of them, a convolution or linear map computed functionally with a learned weight, a
    quantizable layer the forward pass never calls, a forward pass that fails on a
    ``[1, 3, image_size, image_size]`` input, and (with ``num_classes``) logits of another width.
    """
    layers: list[tuple[str, nn.Module]] = [(n, m) for n, m in model.named_modules() if isinstance(m, QUANTIZABLE)]
    if not layers:
        raise UnsupportedModelError(f"{label} has no nn.Conv2d or nn.Linear layer to quantize")
    seen: dict[int, str] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        if isinstance(module, QUANTIZABLE):
            if id(module) in seen and seen[id(module)] != name:
                raise UnsupportedModelError(
                    f"{label}: layer {seen[id(module)]!r} is also registered as {name!r} "
                    "(weight sharing); each quantizable layer must be used once"
                )
            seen.setdefault(id(module), name)
    owners: dict[int, str] = {}
    for name, module in layers:
        for pname, param in module.named_parameters(recurse=False):
            if id(param) in owners:
                raise UnsupportedModelError(
                    f"{label}: layer {name!r} shares its {pname} with layer {owners[id(param)]!r} (weight sharing)"
                )
            owners[id(param)] = name
    param_names = {id(p): n for n, p in model.named_parameters(remove_duplicate=False)}

    stack: list[tuple[str, nn.Module]] = []
    calls: dict[str, int] = {}
    watch = _WeightedOpWatch(stack, param_names)
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters())
        x = torch.zeros(1, 3, image_size, image_size, device=param.device, dtype=param.dtype)
        with _module_stack(model, stack, calls), watch, torch.no_grad():
            out = model(x)
    except (RuntimeError, ValueError, IndexError, AssertionError) as err:
        raise UnsupportedModelError(
            f"{label} cannot take {image_size}x{image_size} RGB images "
            f"(input [1, 3, {image_size}, {image_size}]): {str(err).splitlines()[0]}"
        ) from None
    finally:
        model.train(was_training)
    if watch.found:
        raise UnsupportedModelError(
            f"{label} computes {watch.found[0]}: the quantized wrappers handle only "
            "nn.Conv2d and nn.Linear modules; make it a module"
        )
    for name, _ in layers:
        n = calls.get(name, 0)
        if n == 0:
            raise UnsupportedModelError(
                f"{label}: layer {name!r} is not called in the forward pass; "
                "remove it or the search would decide bits it never uses"
            )
        if n > 1:
            raise UnsupportedModelError(
                f"{label}: layer {name!r} is called {n} times per forward pass "
                "(weight sharing); each quantizable layer must be used once"
            )
    if num_classes is not None and (not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[1] != num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UnsupportedModelError(
            f"{label} returns {shape} for one image; expected logits [1, {num_classes}] "
            f"for the dataset's {num_classes} classes"
        )
    return layers
