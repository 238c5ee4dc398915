"""Optuna samplers by name: the one place the tuner and the black-box Optuna searches build theirs.

Optuna is imported when a sampler is built, so code that never builds one runs without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

SAMPLER_NAMES = ("tpe", "random", "cmaes", "gp", "nsga2")


def build_sampler(name: str, seed: int | None, options: dict[str, Any] | None = None) -> optuna.samplers.BaseSampler:
    """Optuna's sampler called ``name`` (one of :data:`SAMPLER_NAMES`), seeded with ``seed``.

    ``options`` are the sampler's constructor keywords, except that CMA-ES's ``popsize``
    is spelled ``population_size`` like NSGA-II's. Which options a caller accepts is the
    caller's to check.
    """
    import optuna

    samplers = optuna.samplers
    classes: dict[str, type[optuna.samplers.BaseSampler]] = {
        "tpe": samplers.TPESampler,
        "random": samplers.RandomSampler,
        "cmaes": samplers.CmaEsSampler,
        "gp": samplers.GPSampler,
        "nsga2": samplers.NSGAIISampler,
    }
    if name not in classes:
        raise ValueError(f"unknown sampler {name!r}; expected one of {', '.join(SAMPLER_NAMES)}")
    kwargs = dict(options or {})
    if name == "cmaes" and "population_size" in kwargs:
        kwargs["popsize"] = kwargs.pop("population_size")
    return classes[name](seed=seed, **kwargs)
