"""An observer of a policy problem that records every evaluation into the run folder as it happens.

Whatever evaluates the problem (an env episode driven by HAQ's DDPG or an SB3 algorithm,
a black-box strategy calling the problem directly), the run folder is the same:
``episodes.csv`` (one row per episode, appended and flushed, so a killed run keeps every
finished episode), ``best_policy.json`` (rewritten atomically whenever a better policy
that meets the budget appears) and TensorBoard events.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from haq_gym.problem import Outcome, PolicyProblem

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

EPISODE_COLUMNS = (
    "episode",
    "reward",
    "accuracy",
    "latency_ratio",
    "flash_ratio",
    "bitops_ratio",
    "budget_met",
    "cached",
    "eval_time_s",
    "w_bits",
    "a_bits",
)


class RunRecorder:
    """Writes ``episodes.csv``, ``best_policy.json`` and TensorBoard scalars as evaluations end.

    Attaches itself to ``problem`` as an observer (one row per evaluation, numbered from 1
    as "episodes"); :meth:`close` detaches it and closes the files.
    """

    def __init__(
        self,
        problem: PolicyProblem,
        run_dir: str | os.PathLike[str],
        found_by: dict[str, Any] | None = None,
        tensorboard: bool = True,
    ) -> None:
        self.problem = problem
        self.run_dir = Path(run_dir)
        self.found_by = dict(found_by or {})
        self.episodes = 0
        self.best_reward = -math.inf
        self.best_episode: int | None = None
        self.best_accuracy = math.nan
        self.csv_path = self.run_dir / "episodes.csv"
        self.best_path = self.run_dir / "best_policy.json"
        new = not self.csv_path.exists()
        self._csv = open(self.csv_path, "a", newline="")  # noqa: SIM115 - open for the whole run; close() closes it
        self._writer = csv.writer(self._csv)
        if new:
            self._writer.writerow(EPISODE_COLUMNS)
            self._csv.flush()
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=os.fspath(self.run_dir / "tensorboard"))
        problem.add_observer(self.record)

    @property
    def tensorboard_writer(self) -> SummaryWriter | None:
        """The run's ``SummaryWriter`` (agents may log their own scalars to it), or None."""
        return self._tb

    def continue_from(self, episodes: int, best_reward: float, best_episode: int | None) -> None:
        """Continue a resumed run: ``episodes`` rows are in ``episodes.csv`` already, the best feasible among them."""
        self.episodes = episodes
        self.best_reward = best_reward
        self.best_episode = best_episode

    def record(self, outcome: Outcome) -> None:
        """Append ``outcome`` to ``episodes.csv`` (and TensorBoard); keep it as the best policy if it is."""
        self.episodes += 1
        n = self.episodes
        policy = outcome.policy
        self._writer.writerow(
            [
                n,
                f"{outcome.reward:.6f}",
                f"{outcome.accuracy:.4f}",
                f"{outcome.latency_ratio:.6f}",
                f"{outcome.flash_ratio:.6f}",
                f"{outcome.bitops_ratio:.6f}",
                int(outcome.budget_met),
                int(outcome.cached),
                f"{outcome.eval_time_s:.4f}",
                " ".join(str(w) for w, _ in policy),
                " ".join(str(a) for _, a in policy),
            ]
        )
        self._csv.flush()
        if self._tb is not None:
            for key in ("reward", "accuracy", "latency_ratio", "flash_ratio", "bitops_ratio"):
                self._tb.add_scalar(f"episode/{key}", float(getattr(outcome, key)), n)
        if outcome.budget_met and outcome.reward > self.best_reward:
            self.best_reward = float(outcome.reward)
            self.best_episode = n
            self.best_accuracy = float(outcome.accuracy)
            self.problem.policy_file(outcome, found_by={**self.found_by, "episode": n}).save(self.best_path)
            if self._tb is not None:
                self._tb.add_scalar("search/best_reward", self.best_reward, n)

    def write_hparams(self, hparams: dict[str, Any]) -> None:
        """The run's settings beside its results in TensorBoard's HPARAMS tab, in this run's own folder.

        ``hparams`` values that are not numbers, strings or booleans are written as text, so
        runs compare by any setting (algorithm, seed, env keywords, hyperparameters).
        """
        if self._tb is None:
            return
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        flat = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in hparams.items()}
        best_reward = self.best_reward if math.isfinite(self.best_reward) else math.nan
        metrics = {
            "result/best_accuracy": self.best_accuracy,
            "result/best_reward": best_reward,
            "result/episodes": float(self.episodes),
        }
        writer = self._tb._get_file_writer()  # add_hparams would start a second run in a sub-folder
        for summary in hparams_summary(flat, metrics):
            writer.add_summary(summary)
        for key, value in metrics.items():
            self._tb.add_scalar(key, value)

    def close(self) -> None:
        """Stop observing the problem; close ``episodes.csv`` and the TensorBoard writer."""
        self.problem.remove_observer(self.record)
        if not self._csv.closed:
            self._csv.close()
        if self._tb is not None:
            self._tb.close()
