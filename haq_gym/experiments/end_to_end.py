"""End to end: does a searched policy, once finetuned, beat what a user gets without search?

The plan, every step a normal haq-gym command in its own run folder (so any of them can
be inspected or repeated by hand), run by :func:`haq_gym.experiments.jobs.run_jobs` (a local
pool of workers over the devices, or Ray tasks, as its :class:`~haq_gym.experiments.jobs.GridSettings` say):

1. **Float model**: built (and trained on ``device`` on first use) in this process, so the
   workers share one cached checkpoint.
2. **Uniform curve**: uniform precisions ``WwAa`` (first layer ``[8, -1]``, last ``[8, 8]``)
   finetuned with the same recipe. With ``budget=None`` the latency budget is the cost of
   the most expensive uniform precision (other than the all-``min_bit`` one, which leaves a
   search nothing to choose) whose finetuned **validation** top-1 is at least ``gap``
   points below the float model's: a budget where precision matters, chosen without the
   test split. The cost-matched uniform baseline is the uniform precision that meets the
   budget with the best finetuned validation top-1.
3. **Searches**: each strategy x search seed, ``evaluations`` policy evaluations at the
   budget (``python -m train_agent``), plus one ``random`` run whose ``random_policies``
   policies (every one meets the budget after the env's enforcement) are the random
   baseline's distribution.
4. **Finetunes**: each search's best policy x ``finetune_seeds``; the cost-matched
   uniform x ``baseline_seeds``; each random policy once. The accuracy reported is the
   last epoch's test top-1 (nothing is chosen on test).
5. **Proxies** (optional): the random and searched policies re-scored by other search
   rewards (e.g. the LSQ-initialised accuracy), to see which reward orders policies like
   their finetuned accuracy does.

:func:`haq_gym.experiments.report.write_report` turns the folder into results.csv,
summary.md and figures.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from haq_gym.experiments.jobs import GridSettings, Job, run_jobs
from haq_gym.policy import PolicyFile, uniform_bits
from haq_gym.registration import ENV_IDS
from haq_gym.runs import claim_folder, lock_folder
from haq_gym.util import write_atomic

if TYPE_CHECKING:
    from haq_gym.search_setup import SearchSetup

UNIFORM_CANDIDATES = ((2, 2), (3, 2), (2, 3), (3, 3), (4, 3), (3, 4), (4, 4), (5, 5), (6, 6), (8, 8))
"""Uniform precisions finetuned for the curve: the diagonal plus the steps around the usual accuracy cliff."""

PLAN_FILE = "plan.json"


@dataclass(frozen=True)
class Strategy:
    """A zoo algorithm with optional hyperparameter overrides, written ``algo`` or ``algo:key=value,key=value``."""

    label: str
    algo: str
    overrides: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Strategy:
        algo, _, rest = text.partition(":")
        if not algo:
            raise ValueError(f"strategy {text!r}: expected ALGO or ALGO:key=value,...")
        overrides = tuple(o for o in rest.split(",") if o)
        for item in overrides:
            if "=" not in item:
                raise ValueError(f"strategy {text!r}: override {item!r} is not key=value")
        return cls(label=text.replace(":", "_").replace(",", "_").replace("=", "-"), algo=algo, overrides=overrides)

    def search_args(
        self, env: str, seed: int, episodes: int, output: Path, env_kwargs: Sequence[str]
    ) -> tuple[str, ...]:
        """The ``python -m train_agent ...`` arguments of one quiet search run of this strategy."""
        args = ["-m", "train_agent", "--algo", self.algo, "--env", env, "--seed", str(seed)]
        args += ["--episodes", str(episodes), "--output", str(output), "--no-progress", "--env-kwargs", *env_kwargs]
        if self.overrides:
            args += ["--hyperparams", *self.overrides]
        return tuple(args)


@dataclass(frozen=True)
class EndToEndSettings:
    """Everything that decides the benchmark's results (stored in ``plan.json``; a resume must match)."""

    env: str = "HAQ-MobileNetV2-v0"
    dataset: str = "fashion-mnist"
    data_root: str | None = None
    checkpoint: str | None = None
    budget: float | None = None
    gap: float = 1.5
    strategies: tuple[str, ...] = ("haq-ddpg", "sac", "optuna-tpe", "greedy-sensitivity")
    search_seeds: tuple[int, ...] = (0, 1, 2)
    finetune_seeds: tuple[int, ...] = (0, 1)
    baseline_seeds: tuple[int, ...] = (0, 1, 2, 3)
    evaluations: int = 120
    random_policies: int = 24
    epochs: int = 2
    batch_size: int | None = None
    lr: float | None = None
    uniform: tuple[tuple[int, int], ...] = UNIFORM_CANDIDATES
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    proxies: dict[str, dict[str, Any]] = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.env not in ENV_IDS:
            raise ValueError(f"unknown env {self.env!r}; haq-gym registers {', '.join(ENV_IDS)}")
        if "KMeans" in self.env:
            raise ValueError("the end-to-end benchmark covers the linear (latency-budgeted) envs, not k-means")
        clashes = sorted(
            set(self.env_kwargs)
            & {"dataset", "data_root", "latency_budget", "model", "device", "val_size", "train_size", "checkpoint"}
        )
        if clashes:
            raise ValueError(
                f"env kwargs {clashes} are set by the benchmark itself (use its own flags); "
                "val_size/train_size must stay at the defaults the finetune uses"
            )
        for w, a in self.uniform:
            if not (2 <= w <= 8 and 2 <= a <= 8):
                raise ValueError(f"uniform precision W{w}A{a}: bits must be in 2..8")
        if not self.uniform:
            raise ValueError("name at least one uniform precision")
        for name, value in (
            ("evaluations", self.evaluations),
            ("epochs", self.epochs),
            ("batch_size", self.batch_size or 1),
        ):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if self.random_policies < 0:
            raise ValueError(f"random_policies must be >= 0, got {self.random_policies}")
        if not (self.search_seeds and self.finetune_seeds and self.baseline_seeds):
            raise ValueError("search, finetune and baseline seeds must each name at least one seed")
        if self.budget is not None and not 0 < self.budget <= 1:
            raise ValueError(f"budget is a latency ratio in (0, 1], got {self.budget}")
        if self.gap <= 0:
            raise ValueError(f"gap must be positive, got {self.gap}")
        for text in self.strategies:
            Strategy.parse(text)

    @property
    def model(self) -> str:
        return str(ENV_IDS[self.env][1]["model"])

    def to_dict(self) -> dict[str, Any]:
        plain: dict[str, Any] = json.loads(json.dumps(asdict(self)))
        return plain


@dataclass
class Uniform:
    w: int
    a: int
    latency: float
    flash: float
    val: float | None = None
    test: float | None = None


@dataclass
class Plan:
    """What the benchmark decided along the way (the budget and the baseline), saved as ``plan.json``."""

    settings: dict[str, Any]
    float_val_top1: float
    float_test_top1: float | None
    layer_names: list[str]
    uniform_curve: list[dict[str, Any]] = field(default_factory=list)
    budget: float | None = None
    budget_source: str = ""
    cost_matched_uniform: list[int] | None = None

    def matched_uniform(self) -> tuple[int, int]:
        """The uniform ``(w, a)`` matched to the budget; ``ValueError`` before the uniform curve has run."""
        if self.cost_matched_uniform is None:
            raise ValueError("the plan has no cost-matched uniform precision yet (the uniform curve has not run)")
        w, a = self.cost_matched_uniform
        return w, a


class EndToEnd:
    """Runs the plan of this module's docstring in ``output`` (see :meth:`run`)."""

    def __init__(
        self,
        settings: EndToEndSettings,
        output: str | os.PathLike[str],
        grid: GridSettings | None = None,
        resume: bool = False,
        progress: bool = True,
    ) -> None:
        self.s = settings
        self.out = Path(output).absolute()
        self.grid = GridSettings() if grid is None else grid
        self.device = self.grid.local_device()  # the float model and the proxies, in this process
        self.resume, self.progress = resume, progress
        if self.out.exists() and any(self.out.iterdir()) and not resume:
            raise FileExistsError(f"{self.out} exists and is not empty; choose another --output or pass --resume")
        plan_path = self.out / PLAN_FILE
        if resume and plan_path.exists():
            saved = json.loads(plan_path.read_text())["settings"]
            if saved != settings.to_dict():
                diff = sorted(
                    k for k in saved.keys() | settings.to_dict().keys() if saved.get(k) != settings.to_dict().get(k)
                )
                raise ValueError(
                    f"--resume: {self.out} was run with other settings ({', '.join(diff)} differ); "
                    "rerun with the same flags or choose another --output"
                )
        if not self.out.exists():
            claim_folder(self.out, "benchmark folder")  # of two benchmarks started on one --output, one is refused
        self._lock = lock_folder(self.out, "benchmark folder")  # held while this object lives: one resume at a time

    # ----- job builders
    def _data_args(self) -> list[str]:
        return ["--dataset", self.s.dataset] + (["--data-root", self.s.data_root] if self.s.data_root else [])

    def _finetune_job(self, name: str, folder: Path, what: list[str], seed: int, meta: dict[str, Any]) -> Job:
        args = [
            "-m",
            "haq_gym.finetune",
            *what,
            "--model",
            self.s.model,
            *self._data_args(),
            "--width-mult",
            str(self.s.env_kwargs.get("width_mult", 1.0)),
            "--epochs",
            str(self.s.epochs),
            "--seed",
            str(seed),
            "--output",
            str(folder),
            "--no-progress",
        ]
        if self.s.lr is not None:
            args += ["--lr", str(self.s.lr)]
        if self.s.batch_size is not None:
            args += ["--batch-size", str(self.s.batch_size)]
        if self.s.checkpoint is not None:
            args += ["--init-checkpoint", self.s.checkpoint]
        policy = Path(what[1]) if what[0] == "--policy" else None
        inputs = (policy,) if policy is not None and policy.is_relative_to(self.out) else ()  # sent to a Ray node
        return Job(name, folder, tuple(args), meta, device_flag="--device", inputs=inputs)

    def _search_job(self, strategy: Strategy, seed: int, episodes: int, budget: float) -> Job:
        folder = self.out / "search" / f"{strategy.label}_seed{seed}"
        env_kwargs = {"dataset": self.s.dataset, "latency_budget": budget, **self.s.env_kwargs}
        if self.s.data_root:
            env_kwargs["data_root"] = self.s.data_root
        if self.s.checkpoint:
            env_kwargs["checkpoint"] = self.s.checkpoint
        args = strategy.search_args(self.s.env, seed, episodes, folder, [f"{k}={v}" for k, v in env_kwargs.items()])
        return Job(
            f"search {strategy.label} seed {seed}",
            folder,
            args,
            {"group": strategy.label, "search_seed": seed},
            device_flag="--device",
        )

    # ----- phases
    def build_problem(self) -> SearchSetup:
        """The search problem at default settings: trains and caches the float model on first use."""
        from haq_gym.search_setup import build_search_setup

        return build_search_setup(
            model=self.s.model,
            dataset=self.s.dataset,
            data_root=self.s.data_root,
            checkpoint=self.s.checkpoint,
            device=self.device,
            progress=self.progress,
            **{
                k: v
                for k, v in self.s.env_kwargs.items()
                if k in ("width_mult", "latency_table", "hardware", "float_bit")
            },
        )

    def uniform_curve(self, setup: SearchSetup) -> tuple[float, str, Uniform, list[Uniform]]:
        """Finetune the uniform candidates (first finetune seed); return budget, its source, the baseline, the curve."""
        n = len(setup.layers)
        curve = []
        for w, a in self.s.uniform:
            costs = setup.cost_model.costs(uniform_bits(n, w, a))
            curve.append(Uniform(w, a, costs.latency_ratio, costs.flash_ratio))
        seed = self.s.baseline_seeds[0]
        jobs = [
            self._finetune_job(
                f"uniform W{u.w}A{u.a}",
                self._uniform_folder(u, seed),
                ["--w-bits", str(u.w), "--a-bits", str(u.a)],
                seed,
                {},
            )
            for u in curve
        ]
        results = run_jobs(jobs, self.grid, self.resume, "uniform curve", self.progress)
        for u, r in zip(curve, results, strict=True):
            if r.ok:
                u.val, u.test = last_epoch(r.job.folder)
        float_val = setup.reference_accuracy
        if self.s.budget is not None:
            budget, source = self.s.budget, "given"
        else:
            lowest = min(curve, key=lambda u: u.latency)
            above = [u for u in curve if u is not lowest and u.val is not None]
            if not above:
                raise RuntimeError(
                    "no uniform precision above the cheapest finished its finetune; see the logs in "
                    f"{self.out / 'finetune'} or pass --budget"
                )
            losing = [u for u in above if u.val is not None and float_val - u.val >= self.s.gap]
            if losing:
                pick = max(losing, key=lambda u: u.latency)
                source = (
                    f"auto: latency of W{pick.w}A{pick.a}, the most expensive uniform precision whose finetuned "
                    f"validation top-1 ({pick.val:.2f}%) is >= {self.s.gap} points below float ({float_val:.2f}%)"
                )
            else:  # every precision above the cheapest is close to float: take the one that loses most
                pick = min(above, key=lambda u: (u.val, -u.latency))
                source = (
                    f"auto, gap not reached: no uniform precision above the cheapest lost {self.s.gap} points "
                    f"against float ({float_val:.2f}%) on validation; latency of W{pick.w}A{pick.a}, which lost "
                    f"most ({pick.val:.2f}%)"
                )
            budget = pick.latency
        meeting = [u for u in curve if u.latency <= budget + 1e-9 and u.val is not None]
        if not meeting:
            raise RuntimeError(f"no finetuned uniform precision meets the latency budget {budget}")
        baseline = max(meeting, key=lambda u: (u.val, u.latency))
        return budget, source, baseline, curve

    def _uniform_folder(self, u: Uniform, seed: int) -> Path:
        return self.out / "finetune" / f"uniform_w{u.w}a{u.a}_ft{seed}"

    def run(self) -> Plan:
        """Run (or resume) every phase; returns the plan, also written to ``plan.json``."""
        setup = self.build_problem()
        plan = Plan(
            settings=self.s.to_dict(),
            float_val_top1=setup.reference_accuracy,
            float_test_top1=setup.checkpoint_meta.get("test_top1"),
            layer_names=list(setup.layer_names),
        )
        budget, source, baseline, curve = self.uniform_curve(setup)
        plan.budget, plan.budget_source = budget, source
        plan.uniform_curve = [asdict(u) for u in curve]
        plan.cost_matched_uniform = [baseline.w, baseline.a]
        self._save(plan)
        print(
            f"latency budget {budget:.4f} ({source}); cost-matched uniform W{baseline.w}A{baseline.a} "
            f"(validation top-1 {baseline.val:.2f}%)",
            flush=True,
        )

        strategies = [Strategy.parse(t) for t in self.s.strategies]
        searches = [
            self._search_job(st, seed, self.s.evaluations, budget) for st in strategies for seed in self.s.search_seeds
        ]
        if self.s.random_policies:
            searches.append(
                self._search_job(Strategy("random-policies", "random", ()), self.s.seed, self.s.random_policies, budget)
            )
        run_jobs(searches, self.grid, self.resume, "searches", self.progress)

        random_policies = self._random_policy_files(setup, budget) if self.s.random_policies else []
        if self.s.proxies:
            self._score_proxies(random_policies + self._searched_policy_files(strategies))

        finetunes = []
        for st in strategies:
            for seed in self.s.search_seeds:
                policy = self.out / "search" / f"{st.label}_seed{seed}" / "best_policy.json"
                if not policy.exists():
                    print(f"search {st.label} seed {seed}: no policy met the budget; nothing to finetune", flush=True)
                    continue
                for ft in self.s.finetune_seeds:
                    finetunes.append(
                        self._finetune_job(
                            f"{st.label} seed {seed} ft {ft}",
                            self.out / "finetune" / f"{st.label}_seed{seed}_ft{ft}",
                            ["--policy", str(policy)],
                            ft,
                            {"group": st.label, "search_seed": seed, "finetune_seed": ft, "policy": str(policy)},
                        )
                    )
        for ft in self.s.baseline_seeds:
            finetunes.append(
                self._finetune_job(
                    f"uniform W{baseline.w}A{baseline.a} ft {ft}",
                    self._uniform_folder(baseline, ft),
                    ["--w-bits", str(baseline.w), "--a-bits", str(baseline.a)],
                    ft,
                    {},
                )
            )
        for policy in random_policies:
            ft = self.s.finetune_seeds[0]
            finetunes.append(
                self._finetune_job(
                    f"{policy.stem} ft {ft}",
                    self.out / "finetune" / f"{policy.stem}_ft{ft}",
                    ["--policy", str(policy)],
                    ft,
                    {},
                )
            )
        run_jobs(finetunes, self.grid, self.resume, "finetunes", self.progress)
        return plan

    def _save(self, plan: Plan) -> None:
        write_atomic(self.out / PLAN_FILE, json.dumps(asdict(plan), indent=1))

    def _searched_policy_files(self, strategies: Sequence[Strategy]) -> list[Path]:
        found = [
            self.out / "search" / f"{st.label}_seed{seed}" / "best_policy.json"
            for st in strategies
            for seed in self.s.search_seeds
        ]
        return [p for p in found if p.exists()]

    def _random_policy_files(self, setup: SearchSetup, budget: float) -> list[Path]:
        """One policy file per budget-meeting episode of the random run (duplicates dropped)."""
        run = self.out / "search" / f"random-policies_seed{self.s.seed}"
        folder = self.out / "random_policies"
        folder.mkdir(exist_ok=True)
        paths, seen = [], set()
        for row in read_episodes(run / "episodes.csv"):
            bits = [[int(w), int(a)] for w, a in zip(row["w_bits"].split(), row["a_bits"].split(), strict=True)]
            key = json.dumps(bits)
            if row["budget_met"] != "1" or key in seen:
                continue
            seen.add(key)
            path = folder / f"random_{int(row['episode']):03d}.json"
            if not path.exists():
                PolicyFile(
                    model=self.s.model,
                    dataset=self.s.dataset,
                    layer_names=list(setup.layer_names),
                    bits=bits,
                    costs={k: float(row[k]) for k in ("latency_ratio", "flash_ratio", "bitops_ratio")},
                    accuracy={"search_val_top1": float(row["accuracy"])},
                    budget={"latency": budget, "budget_met": True},
                    found_by={
                        "algo": "random",
                        "seed": self.s.seed,
                        "episode": int(row["episode"]),
                        "reward": float(row["reward"]),
                    },
                    model_kwargs={"width_mult": setup.width_mult, "num_classes": setup.bundle.num_classes},
                ).save(path)
            paths.append(path)
        return paths

    def _score_proxies(self, policies: Sequence[Path]) -> None:
        """Validation top-1 of each policy under every proxy's env settings, in ``proxies.csv`` (resumable)."""
        from haq_gym.search_setup import build_search_setup

        path = self.out / "proxies.csv"
        done = {(r["proxy"], r["policy"]) for r in read_csv(path)} if path.exists() else set()
        new = not path.exists()
        with open(path, "a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["proxy", "policy", "val_top1", "eval_time_s"])
            if new:
                writer.writeheader()
            for name, kwargs in self.s.proxies.items():
                todo = [p for p in policies if (name, policy_key(p, self.out)) not in done]
                if not todo:
                    continue
                width = {"width_mult": self.s.env_kwargs["width_mult"]} if "width_mult" in self.s.env_kwargs else {}
                setup = build_search_setup(
                    model=self.s.model,
                    dataset=self.s.dataset,
                    data_root=self.s.data_root,
                    checkpoint=self.s.checkpoint,
                    device=self.device,
                    progress=False,
                    **{**width, **kwargs},
                )
                for policy in todo:
                    bits = PolicyFile.load(policy).bits
                    result = setup.evaluator.evaluate(bits)
                    writer.writerow(
                        {
                            "proxy": name,
                            "policy": policy_key(policy, self.out),
                            "val_top1": f"{result.accuracy:.4f}",
                            "eval_time_s": f"{result.eval_time_s:.3f}",
                        }
                    )
                    fh.flush()
                print(f"proxy {name}: scored {len(todo)} policies", flush=True)


def policy_key(path: str | os.PathLike[str], out: Path) -> str:
    """A policy file's path relative to the benchmark folder ``out`` (``search/.../best_policy.json``,
    ``random_policies/random_007.json``), so results keep matching when the folder is moved or copied."""
    path = Path(path)
    try:
        return path.relative_to(out).as_posix()
    except ValueError:
        parts = path.parts
        for anchor in ("search", "random_policies"):
            if anchor in parts:
                return Path(*parts[parts.index(anchor) :]).as_posix()
    return path.as_posix()


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def read_episodes(path: Path) -> list[dict[str, str]]:
    """A search run's ``episodes.csv`` rows (empty when the run wrote none)."""
    return read_csv(path) if path.exists() else []


def last_epoch(run_dir: Path) -> tuple[float, float]:
    """(validation top-1, test top-1) of a finetune run's last epoch."""
    rows = read_csv(run_dir / "metrics.csv")
    if not rows:
        raise ValueError(f"{run_dir}/metrics.csv has no epochs")
    return float(rows[-1]["val_top1"]), float(rows[-1]["test_top1"])
