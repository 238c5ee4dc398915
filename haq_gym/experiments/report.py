"""Read an end-to-end benchmark folder and write results.csv, summary.md and its figures.

Every number comes from the run folders (``metrics.csv`` of each finetune, ``episodes.csv``
and ``best_policy.json`` of each search, ``plan.json``, ``proxies.csv``), so the report can
be rewritten at any time, also while runs are missing (they are named as missing).
"""

from __future__ import annotations

import csv
import json
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from haq_gym.experiments.end_to_end import EndToEndSettings, Plan, Strategy, last_epoch, policy_key, read_csv
from haq_gym.experiments.jobs import Job, is_done
from haq_gym.experiments.statistics import (
    RankAgreement,
    mean_difference,
    probability_of_improvement,
    rank_agreement,
    summarise,
)
from haq_gym.policy import PolicyFile

# Group names of the baselines; strategy labels never contain ":" (see Strategy.parse).
UNIFORM, RANDOM = "baseline:uniform", "baseline:random"
FIELDS = (
    "group",
    "search_seed",
    "finetune_seed",
    "policy",
    "latency_ratio",
    "flash_ratio",
    "search_reward",
    "search_val_top1",
    "final_val_top1",
    "final_test_top1",
    "run_dir",
)


@dataclass
class Row:
    group: str
    search_seed: int | None
    finetune_seed: int
    policy: str
    latency_ratio: float
    flash_ratio: float
    search_reward: float | None
    search_val_top1: float | None
    final_val_top1: float
    final_test_top1: float
    run_dir: str


def _done(folder: Path) -> bool:
    return is_done(Job("", folder, ()))


def collect(out: Path, plan: Plan) -> tuple[list[Row], list[str]]:
    """One row per finished finetune; the names of the finetunes that are missing."""
    s = EndToEndSettings(**{**plan.settings, **{k: tuple(v) for k, v in plan.settings.items() if isinstance(v, list)}})
    rows, missing = [], []
    w, a = plan.matched_uniform()
    uniform = next(u for u in plan.uniform_curve if (u["w"], u["a"]) == (w, a))

    def add(group: str, search_seed: int | None, ft: int, policy: PolicyFile | None, name: str, folder: Path) -> None:
        if not _done(folder):
            missing.append(folder.name)
            return
        val, test = last_epoch(folder)
        if policy is None:  # the cost-matched uniform: costs from the plan, no search reward
            costs, reward, search_val = (
                {"latency_ratio": uniform["latency"], "flash_ratio": uniform["flash"]},
                None,
                None,
            )
        else:
            costs, reward = policy.costs, policy.found_by.get("reward")
            search_val = policy.accuracy.get("search_val_top1")
        rows.append(
            Row(
                group,
                search_seed,
                ft,
                name,
                float(costs["latency_ratio"]),
                float(costs["flash_ratio"]),
                None if reward is None else float(reward),
                search_val,
                val,
                test,
                policy_key(folder, out) if folder.is_relative_to(out) else str(folder),
            )
        )

    for text in s.strategies:
        st = Strategy.parse(text)
        for seed in s.search_seeds:
            path = out / "search" / f"{st.label}_seed{seed}" / "best_policy.json"
            if not path.exists():
                missing.append(f"{st.label}_seed{seed} (no policy)")
                continue
            policy = PolicyFile.load(path)
            for ft in s.finetune_seeds:
                add(
                    st.label,
                    seed,
                    ft,
                    policy,
                    policy_key(path, out),
                    out / "finetune" / f"{st.label}_seed{seed}_ft{ft}",
                )
    for ft in s.baseline_seeds:
        add(UNIFORM, None, ft, None, f"W{w}A{a}", out / "finetune" / f"uniform_w{w}a{a}_ft{ft}")
    for path in sorted((out / "random_policies").glob("random_*.json")):
        ft = s.finetune_seeds[0]
        add(RANDOM, None, ft, PolicyFile.load(path), policy_key(path, out), out / "finetune" / f"{path.stem}_ft{ft}")
    return rows, missing


def write_results_csv(rows: list[Row], path: Path) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: ("" if getattr(r, k) is None else getattr(r, k)) for k in FIELDS})


def policy_means(rows: list[Row]) -> dict[str, tuple[str, float, float]]:
    """Per searched or random policy: (group, search val top-1, final test top-1 averaged over finetune seeds)."""
    by_policy: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        if r.group != UNIFORM and r.search_val_top1 is not None:
            by_policy[r.policy].append(r)
    means = {}
    for p, rs in by_policy.items():
        val = rs[0].search_val_top1
        assert val is not None  # only rows with a search accuracy were grouped
        means[p] = (rs[0].group, float(val), statistics.mean(x.final_test_top1 for x in rs))
    return means


def proxy_scores(proxies_csv: Path) -> dict[str, dict[str, float]]:
    """``proxies.csv`` as proxy name -> policy key -> validation top-1 (empty when there is none)."""
    scores: dict[str, dict[str, float]] = defaultdict(dict)
    if proxies_csv.exists():
        for r in read_csv(proxies_csv):
            scores[r["proxy"]][policy_key(r["policy"], proxies_csv.parent)] = float(r["val_top1"])
    return dict(scores)


def fidelity(rows: list[Row], proxies_csv: Path) -> dict[str, RankAgreement]:
    """Rank agreement of each proxy (the search's own reward first) with the finetuned test top-1."""
    means = policy_means(rows)
    if len(means) < 3:
        return {}
    policies = sorted(means)
    out = {
        "search reward (as searched)": rank_agreement([means[p][1] for p in policies], [means[p][2] for p in policies])
    }
    if proxies_csv.exists():
        for name, by_policy in proxy_scores(proxies_csv).items():
            common = [p for p in policies if p in by_policy]
            if len(common) >= 3:
                out[name] = rank_agreement([by_policy[p] for p in common], [means[p][2] for p in common])
    return out


def write_report(out: str | Path, reps: int = 20000, seed: int = 0, command: str = "", machine: str = "") -> str:
    """Write results.csv, summary.md and the figures of the benchmark in ``out``; returns the summary text."""
    from haq_gym.plots.end_to_end import plot_accuracy_bars, plot_proxy_scatter, plot_uniform_curve

    out = Path(out)
    plan = Plan(**json.loads((out / "plan.json").read_text()))
    rows, missing = collect(out, plan)
    write_results_csv(rows, out / "results.csv")
    s = plan.settings
    groups: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        groups[r.group].append(r.final_test_top1)
    uniform = groups.get(UNIFORM, [])
    random_scores = groups.get(RANDOM, [])
    w, a = plan.cost_matched_uniform or (None, None)
    lines = [f"# End-to-end: {s['env']} on {s['dataset']}", ""]
    if machine:
        lines += [f"Machine: {machine}.", ""]
    runs = (out / "commands.txt").read_text().split("\n") if (out / "commands.txt").exists() else []
    for line in filter(None, runs):
        lines += [f"Run with: `{line}`", ""]
    if command:
        lines += [f"Report: `{command}`", ""]
    lines += [
        f"Latency budget {plan.budget:.4f} ({plan.budget_source}).",
        f"Float model: validation top-1 {plan.float_val_top1:.2f}%, test top-1 "
        f"{plan.float_test_top1 if plan.float_test_top1 is None else round(plan.float_test_top1, 2)}%.",
        f"Each policy: LSQ finetune, {s['epochs']} epochs; accuracy = last epoch's test top-1 (nothing chosen on "
        f"test). Searches: {s['evaluations']} evaluations, search seeds {s['search_seeds']}, finetune seeds "
        f"{s['finetune_seeds']}; uniform: finetune seeds {s['baseline_seeds']}; random: {len(random_scores)} "
        f"policies meeting the budget, one finetune each. Intervals: 95% stratified bootstrap (rliable, "
        f"{reps} resamples).",
        "",
        "## Uniform precision after the same finetune (first finetune seed)",
        "",
        "| uniform | latency ratio | flash ratio | validation top-1 % | test top-1 % | validation vs float |",
        "|---|---|---|---|---|---|",
    ]
    for u in plan.uniform_curve:
        val = "missing" if u["val"] is None else f"{u['val']:.2f}"
        test = "missing" if u["test"] is None else f"{u['test']:.2f}"
        gap = "" if u["val"] is None else f"{u['val'] - plan.float_val_top1:+.2f}"
        mark = " (cost-matched baseline)" if [u["w"], u["a"]] == [w, a] else ""
        lines.append(f"| W{u['w']}A{u['a']}{mark} | {u['latency']:.4f} | {u['flash']:.4f} | {val} | {test} | {gap} |")

    lines += [
        "",
        "## Final test top-1 at the budget",
        "",
        "| policy | runs | mean % [95% CI] | IQM % [95% CI] | minus uniform, points [95% CI] | "
        "P(better than uniform) [95% CI] | P(better than a random policy) |",
        "|---|---|---|---|---|---|---|",
    ]
    order = [st for st in (Strategy.parse(t).label for t in s["strategies"]) if st in groups]
    verdicts = []
    for group in order + [UNIFORM, RANDOM]:
        scores = groups.get(group, [])
        if not scores:
            continue
        label = f"uniform W{w}A{a}" if group == UNIFORM else ("random feasible" if group == RANDOM else group)
        stats_ = summarise(scores, reps, seed)
        cells = [label, str(len(scores)), str(stats_["mean"]), str(stats_["iqm"])]
        if group != UNIFORM and uniform:
            diff = mean_difference(scores, uniform, reps, seed)
            poi = probability_of_improvement(scores, uniform, reps, seed)
            cells += [str(diff), str(poi)]
            if group in order:
                verdicts.append((group, diff, scores))
        else:
            cells += ["-", "-"]
        if group != RANDOM and random_scores:
            cells.append(f"{probability_of_improvement(scores, random_scores, reps, seed).value:.2f}")
        else:
            cells.append("-")
        lines.append("| " + " | ".join(cells) + " |")
    if random_scores:
        q = statistics.quantiles(random_scores, n=4) if len(random_scores) > 1 else [random_scores[0]] * 3
        lines += [
            "",
            f"Random feasible policies ({len(random_scores)}): median {statistics.median(random_scores):.2f}%, "
            f"quartiles {q[0]:.2f} / {q[2]:.2f}, range {min(random_scores):.2f}-{max(random_scores):.2f}.",
        ]

    if verdicts and uniform:
        lines += [
            "",
            "## Goal: at least +1 point over the cost-matched uniform, 95% CI excluding 0, above the "
            "median random feasible policy",
            "",
        ]
        med_random = statistics.median(random_scores) if random_scores else None
        for group, diff, scores in verdicts:
            above = med_random is not None and statistics.mean(scores) > med_random
            met = diff.value >= 1.0 and diff.low > 0 and (med_random is None or above)
            lines.append(
                f"- {group}: {diff.value:+.2f} points [{diff.low:+.2f}, {diff.high:+.2f}]"
                + (
                    ""
                    if med_random is None
                    else f", mean {statistics.mean(scores):.2f}% vs random median {med_random:.2f}%"
                )
                + f": {'met' if met else 'not met'}"
            )

    agreement = fidelity(rows, out / "proxies.csv")
    if agreement:
        lines += [
            "",
            "## Proxy fidelity: does the search reward order policies like their finetuned accuracy?",
            "",
            "Searched best policies and random feasible policies; final = mean test top-1 over finetune seeds.",
            "",
            "| proxy | policies | Kendall tau | Spearman rho | top third: n | tau | rho |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, ra in agreement.items():
            lines.append(
                f"| {name} | {ra.n} | {ra.kendall_tau:.2f} | {ra.spearman_rho:.2f} | {ra.top_n} | "
                f"{ra.top_kendall_tau:.2f} | {ra.top_spearman_rho:.2f} |"
            )
    if missing:
        lines += ["", f"Missing or failed ({len(missing)}): {', '.join(missing)}."]
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    plot_uniform_curve(plan, out / "uniform_curve.png")
    if rows:
        plot_proxy_scatter(rows, plan, out / "proxy_vs_final.png", proxy_scores(out / "proxies.csv"))
        intervals = {g: summarise(groups[g], reps, seed)["mean"] for g in order + [UNIFORM, RANDOM] if groups.get(g)}
        plot_accuracy_bars(intervals, plan, out / "final_accuracy.png")
    return text
