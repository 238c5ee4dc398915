"""The one check for settings a component does not take (hyperparameters, sampler options, config keys)."""

from __future__ import annotations

from collections.abc import Iterable


def check_known_keys(owner: str, given: Iterable[str], known: Iterable[str], what: str = "hyperparameter") -> None:
    """Raise ``ValueError`` naming every key of ``given`` not in ``known`` and listing the known ones.

    ``owner`` is who takes the keys (``"ppo"``, ``"optuna-tpe"``); the message reads
    ``ppo does not take hyperparameter(s) x, y; it takes a, b``.
    """
    known = frozenset(known)
    unknown = sorted(set(given) - known)
    if unknown:
        takes = ", ".join(sorted(known)) if known else "none"
        raise ValueError(f"{owner} does not take {what}(s) {', '.join(unknown)}; it takes {takes}")
