"""The mixed-precision policy as a file: what a search produces and a finetune consumes.

A policy JSON names the model and dataset it was searched for, lists every quantizable
layer with its ``[w_bit, a_bit]`` (``-1`` = not quantized), and records its costs,
accuracy and how it was found. :meth:`PolicyFile.check_layers` refuses to apply it to a
model whose layers differ.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from haq_gym.util import write_atomic

FORMAT = "haq-gym-policy"
FORMAT_VERSION = 1


@dataclass
class PolicyFile:
    """A searched policy and its provenance."""

    model: str
    dataset: str
    layer_names: list[str]
    bits: list[list[int]]
    costs: dict[str, float] = field(default_factory=dict)
    accuracy: dict[str, float] = field(default_factory=dict)
    budget: dict[str, Any] = field(default_factory=dict)
    found_by: dict[str, Any] = field(default_factory=dict)
    model_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.layer_names) != len(self.bits):
            raise ValueError(
                f"policy lists {len(self.layer_names)} layer names but {len(self.bits)} [w_bit, a_bit] entries"
            )
        for name, pair in zip(self.layer_names, self.bits, strict=True):
            if len(pair) != 2 or not all(
                isinstance(b, int) and not isinstance(b, bool) and (b == -1 or 1 <= b <= 32) for b in pair
            ):
                raise ValueError(f"layer {name!r}: expected [w_bit, a_bit] with integers in 1..32 or -1, got {pair!r}")

    def check_layers(self, layer_names: Sequence[str], min_bit: int = 1, max_bit: int = 32) -> None:
        """Raise ``ValueError`` unless this policy fits a model with ``layer_names`` and the bit range."""
        names = list(layer_names)
        if len(names) != len(self.layer_names):
            raise ValueError(
                f"policy has {len(self.layer_names)} layers but the model has {len(names)} quantizable layers"
            )
        for i, (mine, theirs) in enumerate(zip(self.layer_names, names, strict=True)):
            if mine != theirs:
                raise ValueError(f"policy layer {i} is {mine!r} but the model's layer {i} is {theirs!r}")
        for name, pair in zip(self.layer_names, self.bits, strict=True):
            for b in pair:
                if b != -1 and not min_bit <= b <= max_bit:
                    raise ValueError(f"layer {name!r} has {b} bits; supported range is {min_bit}..{max_bit} (or -1)")

    def to_dict(self) -> dict[str, Any]:
        data = {"format": FORMAT, "version": FORMAT_VERSION}
        data.update(asdict(self))
        data["layers"] = [
            {"name": n, "w_bit": w, "a_bit": a} for n, (w, a) in zip(self.layer_names, self.bits, strict=True)
        ]
        del data["layer_names"], data["bits"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "policy") -> PolicyFile:
        if not isinstance(data, dict):
            raise ValueError(f"{source} is not a haq-gym policy: expected a JSON object, got {type(data).__name__}")
        if data.get("format") != FORMAT:
            raise ValueError(f'{source} is not a haq-gym policy (missing "format": "{FORMAT}")')
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(
                f"{source} has policy format version {data.get('version')}; this haq-gym reads version {FORMAT_VERSION}"
            )
        for key in ("costs", "accuracy", "budget", "found_by", "model_kwargs"):
            if not isinstance(data.get(key, {}), dict):
                raise ValueError(f"{source} is malformed: {key} must be a JSON object, got {data[key]!r}")
        for key in ("model", "dataset"):
            if not isinstance(data.get(key), str):
                raise ValueError(f"{source} is malformed: {key} must be a string, got {data.get(key)!r}")
        try:
            layers = data["layers"]
            return cls(
                model=data["model"],
                dataset=data["dataset"],
                layer_names=[entry["name"] for entry in layers],
                bits=[[entry["w_bit"], entry["a_bit"]] for entry in layers],
                costs=data.get("costs", {}),
                accuracy=data.get("accuracy", {}),
                budget=data.get("budget", {}),
                found_by=data.get("found_by", {}),
                model_kwargs=data.get("model_kwargs", {}),
            )
        except (KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"{source} is malformed: missing or wrong field {err}") from None

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically (a reader never sees a half-written file)."""
        write_atomic(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PolicyFile:
        path = os.fspath(path)
        try:
            with open(path) as fh:
                data = json.load(fh)
        except FileNotFoundError:
            raise FileNotFoundError(f"policy file {path!r} does not exist") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"policy file {path!r} is not valid JSON: {err}") from None
        return cls.from_dict(data, source=f"policy file {path!r}")


def uniform_bits(num_layers: int, w_bit: int, a_bit: int) -> list[list[int]]:
    """HAQ's uniform policy: first layer ``[8, -1]`` (input unquantized), last ``[8, 8]``, others ``[w_bit, a_bit]``."""
    if num_layers < 2:
        raise ValueError(f"a uniform policy needs at least 2 layers, got {num_layers}")
    return [[8, -1]] + [[w_bit, a_bit] for _ in range(num_layers - 2)] + [[8, 8]]


def now_iso() -> str:
    """UTC timestamp for provenance fields."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
