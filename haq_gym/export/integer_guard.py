"""Proof that a computation is integer-only: every tensor any torch operator touches must be an integer (or bool).

:func:`integer_only` installs a ``TorchDispatchMode`` that sees each ATen operator call
(the level below Python where every tensor op ends up, including ones hidden inside
``torch.nn.functional``) and raises :class:`FloatingPointOperation` if an argument or a
result is a floating-point or complex tensor. The integer engine runs its whole forward
pass under it, so "no floating-point operation" is checked on every call, not assumed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class FloatingPointOperation(RuntimeError):
    """A torch operator received or produced a non-integer tensor inside :func:`integer_only`."""


class _IntegerOnlyMode(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # torch leaves TorchDispatchMode.__init__ unannotated
        self.ops = 0

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        self._check(func, "argument", (args, kwargs))
        out = func(*args, **kwargs)
        self._check(func, "result", out)
        self.ops += 1
        return out

    @staticmethod
    def _check(func: Any, role: str, tree: Any) -> None:
        stack = [tree]
        while stack:
            item = stack.pop()
            if isinstance(item, torch.Tensor):
                if item.is_floating_point() or item.is_complex():
                    raise FloatingPointOperation(
                        f"{func} got a {item.dtype} {role} of shape {tuple(item.shape)} "
                        "inside an integer-only computation"
                    )
            elif isinstance(item, (list, tuple)):
                stack.extend(item)
            elif isinstance(item, dict):
                stack.extend(item.values())
            elif isinstance(item, (float, complex)):
                raise FloatingPointOperation(
                    f"{func} got the Python {type(item).__name__} {item!r} as an {role} "
                    "inside an integer-only computation"
                )


@contextmanager
def integer_only() -> Iterator[_IntegerOnlyMode]:
    """Raise :class:`FloatingPointOperation` on any floating-point tensor op inside the block.

    The yielded object counts the operators checked (``.ops``), so a caller can see the
    guard was really in the path.
    """
    mode = _IntegerOnlyMode()
    with mode:
        yield mode
