"""Search runs: their settings, the run folder every search writes, and running one (:func:`run_search`)."""

from haq_gym.runs.recorder import EPISODE_COLUMNS, RunRecorder
from haq_gym.runs.run_config import (DEFAULT_ALGO, DEFAULT_ENV, RunConfig, UsageError, algo_defaults, command_line,
                                     parse_key_values)
from haq_gym.runs.run_folder import prepare_run_folder
from haq_gym.runs.search import RunResult, run_search

__all__ = ["DEFAULT_ALGO", "DEFAULT_ENV", "EPISODE_COLUMNS", "RunConfig", "RunRecorder", "RunResult", "UsageError", "algo_defaults",
           "command_line", "parse_key_values", "prepare_run_folder", "run_search"]
