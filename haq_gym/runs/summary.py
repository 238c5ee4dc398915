"""The end of a search run in a few lines: the best policy against its budget and against a uniform precision."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from haq_gym.cost import Costs
from haq_gym.policy import PolicyFile


@dataclass(frozen=True)
class UniformBaseline:
    """The highest uniform precision (every decided tensor at ``bits``) that meets the budget, evaluated."""

    bits: int
    accuracy: float
    costs: Costs


def uniform_baseline(problem: Any) -> UniformBaseline | None:
    """What a user gets without search: the widest uniform policy within the budget (None if none fits).

    Evaluated by the problem's evaluator directly, so no observer records it as an episode of the search.
    """
    for bits in range(problem.max_bit, problem.min_bit - 1, -1):
        policy = problem.fill(problem.pinned, bits)
        if problem.meets_budget(policy):
            return UniformBaseline(bits, problem.setup.evaluator.evaluate(policy).accuracy, problem.costs(policy))
    return None


def _budget_cell(value: float, limit: float | None) -> str:
    return f"{value:.4f}" if limit is None else f"{value:.4f} / {limit:g}"


def summary_table(
    best: PolicyFile | None,
    best_episode: int | None,
    baseline: UniformBaseline | None,
    budget: dict[str, float | None],
    weight_only: bool = False,
) -> str:
    """A Markdown table: the best feasible policy and the uniform baseline, validation top-1 and costs vs budget."""
    lat, fl = budget.get("latency"), budget.get("flash")
    size = "size (to 32-bit)" if weight_only else "flash"
    lines = [f"| policy | validation top-1 | latency / budget | {size} / budget |", "|---|---|---|---|"]
    if best is not None:
        lines.append(
            f"| best found (episode {best_episode}) | {best.accuracy['search_val_top1']:.2f}% | "
            f"{_budget_cell(best.costs['latency_ratio'], lat)} | "
            f"{_budget_cell(best.costs['flash_ratio'], fl)} |"
        )
    else:
        lines.append("| best found | no evaluated policy met the budget | | |")
    if baseline is not None:
        name = f"W{baseline.bits}" if weight_only else f"W{baseline.bits}A{baseline.bits}"
        lines.append(
            f"| uniform {name} (widest within budget) | {baseline.accuracy:.2f}% | "
            f"{_budget_cell(baseline.costs.latency_ratio, lat)} | "
            f"{_budget_cell(baseline.costs.flash_ratio, fl)} |"
        )
    else:
        lines.append("| uniform | no uniform precision meets the budget | | |")
    return "\n".join(lines)


def finetune_command(best_policy: Path, seed: int, env_kwargs: dict[str, Any]) -> str:
    """The command that finetunes the best policy (LSQ, the finetune's defaults) with the run's data and device."""
    cmd = ["python", "-m", "haq_gym.finetune", "--policy", str(best_policy), "--seed", str(seed)]
    if env_kwargs.get("data_root"):
        cmd += ["--data-root", str(env_kwargs["data_root"])]
    if env_kwargs.get("device") not in (None, "cpu"):
        cmd += ["--device", str(env_kwargs["device"])]
    return shlex.join(cmd)
