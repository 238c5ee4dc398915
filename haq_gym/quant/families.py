"""Quantizer families by name: which quantizers a model's wrapped layers use.

``linear`` is haq-gym's linear quantizer (HAQ's grids with an MSE-optimal clip at every
width, calibrated ranges, nothing learned); ``haq`` is HAQ's own (KL-J clip below 5 bits
and max otherwise, activations capped at 6.0, a trainable activation range:
:mod:`haq_gym.quant.haq_linear`); ``lsq``, ``lsq+`` and ``pot`` are the learned-step
family of :mod:`haq_gym.quant.lsq`; ``kmeans`` is HAQ's k-means weight sharing
(:mod:`haq_gym.quant.kmeans_quantizer`) with haq-gym's linear activation quantizers. The
search env and the finetune command both pick a family by these names, so a search can
evaluate policies with the very quantizer the finetune will train (HAQ-LSQ). A new family
is one :func:`register_family` call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from haq_gym.quant.haq_linear import HAQActivationQuantizer, HAQWeightQuantizer
from haq_gym.quant.kmeans_quantizer import KMeansWeightQuantizer
from haq_gym.quant.linear_quantizers import LinearActivationQuantizer, LinearWeightQuantizer
from haq_gym.quant.lsq import LSQPlusQuantizer, LSQQuantizer, PowerOfTwoQuantizer
from haq_gym.quant.protocol import Quantizer

if TYPE_CHECKING:
    from haq_gym.quant.qlayers import QuantLayerMixin


@dataclass(frozen=True)
class QuantizerFamily:
    """A named pair of factories: a layer's weight quantizer, and its input quantizer from the layer's seed.

    ``learned`` says whether a finetune trains something of the quantizers (their parameters,
    or for k-means the shared values; its ``--quantizer`` offers only those families).
    ``grid`` says whether the weights map onto a uniform integer grid (what the integer
    exporter reads; k-means weights do not). ``min_weight_bit`` is the narrowest weight
    width the family quantizes to.
    """

    name: str
    weight: Callable[[], Quantizer]
    activation: Callable[[int], Quantizer]
    learned: bool
    summary: str
    grid: bool = True
    min_weight_bit: int = 2

    def build(self, seed: int = 0) -> tuple[Quantizer, Quantizer]:
        """Fresh ``(weight quantizer, input quantizer)`` for one layer, tagged with this family's name."""
        pair = (self.weight(), self.activation(seed))
        for q in pair:
            if not isinstance(q, Quantizer):
                raise TypeError(f"family {self.name!r} built a {type(q).__name__}, which is not a Quantizer")
            q.family = self.name
        return pair


_FAMILIES: dict[str, QuantizerFamily] = {}


def register_family(family: QuantizerFamily) -> QuantizerFamily:
    """Make ``family`` selectable by its name (a name can be registered once)."""
    if family.name in _FAMILIES:
        raise ValueError(f"quantizer family {family.name!r} is already registered")
    _FAMILIES[family.name] = family
    return family


def family_names(learned: bool | None = None, grid: bool | None = None) -> tuple[str, ...]:
    """Registered family names, in registration order (only those with ``learned`` and ``grid`` as given, if given)."""
    return tuple(
        name
        for name, f in _FAMILIES.items()
        if (learned is None or f.learned == learned) and (grid is None or f.grid == grid)
    )


def get_family(name: str) -> QuantizerFamily:
    """The family called ``name``; an unknown name raises ``ValueError`` listing the known ones."""
    try:
        return _FAMILIES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown quantizer family {name!r}; expected one of {', '.join(_FAMILIES)}") from None


register_family(
    QuantizerFamily(
        "linear",
        LinearWeightQuantizer,
        lambda seed: LinearActivationQuantizer(seed=seed),
        False,
        "haq-gym's: HAQ's grids, symmetric weights and calibrated activations, MSE-optimal clips",
    )
)
register_family(
    QuantizerFamily(
        "haq",
        HAQWeightQuantizer,
        lambda seed: HAQActivationQuantizer(seed=seed),
        True,
        "HAQ's own: KL-J clip below 5 bits and max above, activations capped at 6.0, trainable activation range",
    )
)
register_family(
    QuantizerFamily(
        "lsq",
        lambda: LSQQuantizer("weight"),
        lambda seed: LSQQuantizer("activation"),
        True,
        "learned step sizes (Esser et al. 2020)",
    )
)
register_family(
    QuantizerFamily(
        "lsq+",
        lambda: LSQQuantizer("weight"),
        lambda seed: LSQPlusQuantizer("activation"),
        True,
        "LSQ with a learned activation offset (Bhalgat et al. 2020)",
    )
)
register_family(
    QuantizerFamily(
        "pot",
        lambda: PowerOfTwoQuantizer("weight"),
        lambda seed: PowerOfTwoQuantizer("activation"),
        True,
        "learned power-of-two steps: requantisation is a shift",
    )
)
register_family(
    QuantizerFamily(
        "kmeans",
        KMeansWeightQuantizer,
        lambda seed: LinearActivationQuantizer(seed=seed),
        True,
        "HAQ's k-means weight sharing (2**bits shared values per layer), linear activations",
        grid=False,
        min_weight_bit=1,
    )
)
DEFAULT_FAMILY = "linear"


def set_quantizer_family(layers: Sequence[QuantLayerMixin], family: str) -> None:
    """Give every layer fresh quantizers of ``family``, keeping its bit widths (calibrate afterwards)."""
    chosen = get_family(family)
    for seed, layer in enumerate(layers):
        layer.set_quantizers(*chosen.build(seed))


def reinitialize_learned_steps(layers: Sequence[QuantLayerMixin]) -> None:
    """Put every learned step back to its initial value for the current bits (a no-op for ``linear``).

    The search calls this after applying each policy, so every policy is judged from the
    same starting point rather than from steps left over by the previous one.
    """
    for layer in layers:
        layer.weight_quantizer.reinitialize()
        layer.input_quantizer.reinitialize()


def quantizer_family(layers: Sequence[QuantLayerMixin]) -> str:
    """Name of the family the layers use (raises if they mix families).

    A layer whose quantizers were not built by one family is named after its weight
    quantizer's class.
    """
    names = set()
    for layer in layers:
        w, a = layer.weight_quantizer, layer.input_quantizer
        names.add(w.family if w.family is not None and w.family == a.family else type(w).__name__)
    if len(names) != 1:
        raise ValueError(f"layers mix quantizer families: {sorted(names)}")
    return names.pop()
