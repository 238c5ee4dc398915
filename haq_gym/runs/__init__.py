"""Search runs: their settings, the run folder every search writes, and running one (:func:`run_search`)."""

from haq_gym.runs.recorder import EPISODE_COLUMNS, RunRecorder
from haq_gym.runs.run_config import (
    DEFAULT_ALGO,
    DEFAULT_ENV,
    RunConfig,
    UsageError,
    algo_defaults,
    command_line,
    parse_key_values,
)
from haq_gym.runs.run_folder import (
    CLAIM_NAME,
    check_free,
    claim_folder,
    lock_folder,
    prepare_run_folder,
    release_unused,
)
from haq_gym.runs.search import RunResult, run_search

__all__ = [
    "CLAIM_NAME",
    "DEFAULT_ALGO",
    "DEFAULT_ENV",
    "EPISODE_COLUMNS",
    "RunConfig",
    "RunRecorder",
    "RunResult",
    "UsageError",
    "algo_defaults",
    "check_free",
    "claim_folder",
    "command_line",
    "lock_folder",
    "parse_key_values",
    "prepare_run_folder",
    "release_unused",
    "run_search",
]
