"""Optuna tuning of the search agents' own hyperparameters (``train_agent.py --optimize``).

:mod:`~agents.tuning.hyperparams_sampler` holds one search space per algorithm,
:mod:`~agents.tuning.storage` turns a storage URL into an Optuna storage (journal file,
SQLite, PostgreSQL) with heartbeats, and :mod:`~agents.tuning.optimize` runs the study.
See docs/tuning.md.
"""

from agents.tuning.hyperparams_sampler import HYPERPARAMS_SAMPLER, SearchProblem, get_hyperparams_sampler
from agents.tuning.optimize import PRUNERS, SAMPLERS, TuningResult, TuningSettings, WorkerFailed, summary, tune
from agents.tuning.storage import StorageError, open_storage

__all__ = [
    "HYPERPARAMS_SAMPLER",
    "PRUNERS",
    "SAMPLERS",
    "SearchProblem",
    "StorageError",
    "TuningResult",
    "TuningSettings",
    "WorkerFailed",
    "get_hyperparams_sampler",
    "open_storage",
    "summary",
    "tune",
]
