"""Run folders: what every search writes, whichever agent drives the env."""

from haq_gym.runs.recorder import EPISODE_COLUMNS, RunRecorder
from haq_gym.runs.run_folder import prepare_run_folder
from haq_gym.runs.search import RunResult, run_search

__all__ = ["EPISODE_COLUMNS", "RunRecorder", "RunResult", "prepare_run_folder", "run_search"]
