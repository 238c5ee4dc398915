"""Search-episode cost and training throughput at CIFAR-100 scale, on a GPU or the CPU.

    python benchmarks/gpu_throughput.py --device cuda --val-images 10000 --train-images 20000
    python benchmarks/gpu_throughput.py --device cpu --val-images 1000 --train-images 1000 --episodes 2

No dataset can be downloaded where this runs, so the images are random tensors of
CIFAR-100's shape (3x32x32, 100 classes); speed does not depend on their content.
Measures, for MobileNetV2 (CIFAR strides, width 1, 100 classes):

1. seconds per search episode of the env's work: applying a random policy and evaluating
   it on ``--val-images`` (HAQ's 10,000), without and with HAQ's one-epoch finetune on
   ``--train-images`` (HAQ's 20,000), plus one HAQ-DDPG update round (102 gradient steps,
   batch 64) with the update replayed from a CUDA graph and plainly, and the same round
   of SB3's SAC, TD3 and DDPG (``model.train(gradient_steps=102, batch_size=64)``);
2. training images/s at each ``--batch-sizes``: float and LSQ W4A4 QAT through each
   ``--train-step-modes`` path of :class:`haq_gym.train_step.TrainStep` (``plain``: eager,
   ``graph``: CUDA graph, ``compile``: torch.compile with Inductor's CUDA graphs,
   ``graph-compile``: torch.compile captured in TrainStep's CUDA graph), and the QAT/float
   step-time ratios; with ``--bf16`` also float training under bfloat16 autocast (plain path;
   QAT stays float32: a bf16 cast of ``step * code`` is not exact, so the quantized grid
   would move). Every setting keeps one model for all batch sizes; all are prepared
   (compiled, captured) first and then timed in turns of a few steps, so the modes are
   compared side by side. ``--wait-for`` lets another job use the device while the
   settings compile, and times them only after it finished.

Prints a markdown table and writes the numbers as JSON to ``--output``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from agents.haq_ddpg.ddpg import HAQDDPG, HAQDDPGConfig
from haq_gym.evaluation import FinetuneSettings, PolicyEvaluator
from haq_gym.finetune.checkpoint import build_quantized_model
from haq_gym.policy import uniform_bits
from haq_gym.quant import apply_policy, calibrate
from haq_gym.runtime import configure_cpu_runtime, torch_device
from haq_gym.train_step import TRAIN_STEP_MODES, TrainStep

CL = torch.channels_last


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_policy(rng: np.random.Generator, n: int) -> list[list[int]]:
    return [[8, -1]] + [[int(rng.integers(2, 9)), int(rng.integers(2, 9))] for _ in range(n - 2)] + [[8, 8]]


def episode_seconds(device: torch.device, val: int, train: int, episodes: int, finetune: bool, seed: int) -> float:
    """Median wall time of evaluating (and optionally finetuning) distinct random policies."""
    gen = torch.Generator().manual_seed(seed)
    model, named = build_quantized_model("mobilenetv2", 1.0, 100, None, "linear")
    model.to(device)
    layers = [m for _, m in named]
    val_x = torch.randn(val, 3, 32, 32, generator=gen)
    val_y = torch.randint(0, 100, (val,), generator=gen)
    train_x = torch.randn(train, 3, 32, 32, generator=gen)
    train_y = torch.randint(0, 100, (train,), generator=gen)
    settings = FinetuneSettings(steps=train // 64 if finetune else 0, batch_size=64)
    evaluator = PolicyEvaluator(
        model,
        layers,
        val_x,
        val_y,
        train_x[:64],
        batch_size=500,
        finetune=settings,
        train_images=train_x if finetune else None,
        train_labels=train_y if finetune else None,
    )
    for b in range(2, 9):  # choose every clip range once (a long search does this in its first episodes)
        evaluator.evaluate(uniform_bits(len(layers), b, b))
    rng = np.random.default_rng(seed)
    times = []
    for _ in range(episodes):
        sync(device)
        t0 = time.perf_counter()
        evaluator.evaluate(random_policy(rng, len(layers)))
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def ddpg_update_seconds(device: torch.device, rounds: int, seed: int, cuda_graph: bool) -> float:
    """One episode of HAQ-DDPG learning: 102 transitions stored, each followed by HAQ's update steps."""
    obs_space = gym.spaces.Box(0.0, 1.0, (14,), np.float32)
    act_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
    config = HAQDDPGConfig(cuda_graph=cuda_graph)
    agent = HAQDDPG(obs_space, act_space, config, seed=seed, device=device)
    rng = np.random.default_rng(seed)

    def episode() -> list:
        obs = rng.random((103, 14), dtype=np.float32)
        return [(obs[i], rng.random(1, dtype=np.float32), obs[i + 1], i == 101) for i in range(102)]

    agent.observe_episode(episode(), 0.0, episode=1)  # warm-up episode: fills the buffer
    times = []
    for k in range(rounds + 1):
        transitions = episode()
        sync(device)
        t0 = time.perf_counter()
        agent.observe_episode(transitions, float(rng.random()), episode=config.warmup + 1 + k)
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def sb3_update_seconds(device: torch.device, algo: str, rounds: int, seed: int) -> float:
    """SB3's cost of one HAQ episode's learning: 102 gradient steps at batch 64 (``model.train``)."""
    import stable_baselines3 as sb3
    from stable_baselines3.common.logger import configure

    class Shapes(gym.Env):
        """Only the spaces matter: ``model.train`` samples the filled replay buffer."""

        observation_space = gym.spaces.Box(0.0, 1.0, (14,), np.float32)
        action_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)

        def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple:
            return self.observation_space.sample(), {}

        def step(self, action: np.ndarray) -> tuple:
            return self.observation_space.sample(), 0.0, True, False, {}

    model = getattr(sb3, algo.upper())(
        "MlpPolicy", Shapes(), batch_size=64, learning_starts=0, seed=seed, device=device, verbose=0
    )
    model.set_logger(configure(None, []))
    rng = np.random.default_rng(seed)
    for _ in range(1024):
        obs = rng.random((1, 14), dtype=np.float32)
        model.replay_buffer.add(
            obs,
            rng.random((1, 14), dtype=np.float32),
            rng.random((1, 1), dtype=np.float32),
            rng.random(1, dtype=np.float32),
            np.array([False]),
            [{}],
        )
    times = []
    for _ in range(rounds + 1):
        sync(device)
        t0 = time.perf_counter()
        model.train(gradient_steps=102, batch_size=64)
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


class TrainRunner:
    """One training setting (float or LSQ W4A4, one train-step mode) with its own model, kept for every batch size.

    All runners are prepared (compiled, captured) before any is timed, and then timed in
    turns, so the modes are compared side by side under the same conditions.
    """

    def __init__(self, device: torch.device, kind: str, mode: str, seed: int, calibration: torch.Tensor) -> None:
        torch.manual_seed(seed)
        model, named = build_quantized_model("mobilenetv2", 1.0, 100, None, "lsq")
        layers = [m for _, m in named]
        model.to(device=device, memory_format=CL)
        if kind == "lsq-w4a4":
            apply_policy(layers, uniform_bits(len(layers), 4, 4))
            calibrate(model, layers, calibration)
        model.train()
        self.kind, self.requested_mode = kind, mode
        self.device = device
        self.opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=kind == "float-bf16")
        self.step = TrainStep(model, lambda logits, labels: nn.functional.cross_entropy(logits, labels), mode=mode)
        self.loss = torch.zeros(())  # the last step's loss

    @property
    def mode(self) -> str:
        """The path in use: the requested one, or ``plain`` after a fallback."""
        return self.step.mode

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """One synchronised training step; its wall time in seconds."""
        sync(self.device)
        t0 = time.perf_counter()
        with self.autocast:
            self.loss, _ = self.step(x, y)
        self.opt.step()
        sync(self.device)
        return time.perf_counter() - t0


def time_training(
    device: torch.device,
    batch_sizes: list[int],
    settings: list[tuple[str, str]],
    steps: int,
    seed: int,
    deadlines: dict[str, float | None],
    wait_for: str | None,
    report: Callable[[dict], None],
) -> dict:
    """Prepare every (kind, mode) setting at every batch size, then time them in turns; images/s medians.

    ``deadlines`` (``time.perf_counter`` values, or None): at ``prepare`` the setting being
    prepared is interrupted and no further one is; ``wait`` stops waiting for ``wait_for`` (a
    file another job on the same device creates when done); after ``time`` no further round
    of turns starts (the first always runs).
    ``report`` receives the partial result after every stage (written to disk by the caller).
    """
    gen = torch.Generator().manual_seed(seed)
    data = {
        b: (
            torch.randn(b, 3, 32, 32, generator=gen).to(device).contiguous(memory_format=CL),
            torch.randint(0, 100, (b,), generator=gen).to(device),
        )
        for b in batch_sizes
    }
    out: dict = {"prepare_s": {}, "mode_used": {}, "prepare_losses": {}, "skipped": [], "steps_timed": {}}
    runners: dict[str, TrainRunner] = {}
    # Cheap paths first, then the compiled ones (a compile takes up to minutes).
    order = sorted(settings, key=lambda km: km[1] in ("compile", "graph-compile"))
    for kind, mode in order:
        name = f"{kind}/{mode}"
        if _past(deadlines["prepare"]):
            out["skipped"].append(name)
            continue
        t0 = time.perf_counter()
        try:
            with _interrupt_at(deadlines["prepare"]):
                runner = TrainRunner(device, kind, mode, seed, data[batch_sizes[0]][0][:64])
                losses = []
                for b in batch_sizes:  # initialise, warm up, compile and capture at every batch size
                    for _ in range(PREPARE_CALLS.get(mode, 6)):
                        runner(*data[b])
                        losses.append(float(runner.loss))
        except BudgetExceeded:
            out["skipped"].append(name)
            out["interrupted"] = f"{name} after {time.perf_counter() - t0:.1f} s of preparing"
            print(f"stopped preparing {name} at the prepare budget", flush=True)
            report(out)
            continue
        except Exception as err:  # noqa: BLE001 - one broken setting must not cost the others' numbers
            out["skipped"].append(name)
            out.setdefault("failed", {})[name] = f"{type(err).__name__}: {str(err).strip().splitlines()[:1]}"
            print(f"preparing {name} failed: {out['failed'][name]}", flush=True)
            report(out)
            continue
        out["prepare_s"][name] = time.perf_counter() - t0
        out["mode_used"][name] = runner.mode
        # Same seed, data and updates in every mode of a kind: the losses agree up to float rounding.
        out["prepare_losses"][name] = losses
        runners[name] = runner
        print(f"prepared {name} in {out['prepare_s'][name]:.1f} s (path: {runner.mode})", flush=True)
        report(out)
    if wait_for is not None:
        t0 = time.perf_counter()
        while not Path(wait_for).exists() and not _past(deadlines["wait"]):
            time.sleep(0.5)
        out["waited_s"] = time.perf_counter() - t0
        out["other_job_done_before_timing"] = Path(wait_for).exists()
        print(
            f"waited {out['waited_s']:.1f} s for {wait_for} (found: {out['other_job_done_before_timing']})", flush=True
        )
    times: dict[str, list[float]] = {f"{b}/{name}": [] for b in batch_sizes for name in runners}
    per_round = min(steps, TIMING_ROUND)
    rounds = 0
    while any(len(t) < steps for t in times.values()) and not (rounds and _past(deadlines["time"])):
        rounds += 1
        for b in batch_sizes:
            for name, runner in runners.items():
                times[f"{b}/{name}"] += [runner(*data[b]) for _ in range(per_round)]
        out["images_per_s"] = {
            str(b): {name: b / statistics.median(times[f"{b}/{name}"]) for name in runners} for b in batch_sizes
        }
        out["steps_timed"] = {key: len(t) for key, t in times.items()}
        report(out)
    return out


# Untimed calls per batch size: lazy initialisation, warm-up, compile and capture all happen within them.
PREPARE_CALLS = {"plain": 2, "graph": 4}  # others (compiled): 6
TIMING_ROUND = 5  # steps per runner and batch size in each round of turns


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.perf_counter() > deadline


class BudgetExceeded(BaseException):
    """Raised by the timer of :func:`_interrupt_at`; a ``BaseException``, so no fallback path catches it."""


@contextlib.contextmanager
def _interrupt_at(deadline: float | None) -> Iterator[None]:
    """Interrupt the body (a compile can take minutes) with :class:`BudgetExceeded` at ``deadline``."""
    if deadline is None:
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise BudgetExceeded

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, max(deadline - time.perf_counter(), 1e-3))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def qat_float_ratios(rates: dict[str, float], modes: list[str]) -> dict[str, float]:
    """Step-time ratios LSQ W4A4 / float: per mode, and each mode's QAT against the plain and the fastest float."""
    ratios: dict[str, float] = {}
    floats = {m: rates[f"float/{m}"] for m in modes if f"float/{m}" in rates}
    for m in modes:
        qat = rates.get(f"lsq-w4a4/{m}")
        if qat is None:
            continue
        if m in floats:
            ratios[m] = floats[m] / qat
        if m != "plain" and "plain" in floats:
            ratios[f"{m} QAT vs plain float"] = floats["plain"] / qat
        if floats:
            best = max(floats, key=lambda k: floats[k])
            ratios[f"{m} QAT vs fastest float ({best})"] = floats[best] / qat
    return ratios


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="cuda, cpu or auto")
    p.add_argument("--val-images", type=int, default=10000)
    p.add_argument("--train-images", type=int, default=20000)
    p.add_argument("--episodes", type=int, default=3, help="timed episodes per setting")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 256])
    p.add_argument("--train-steps", type=int, default=20, help="timed training steps per setting")
    p.add_argument("--bf16", action="store_true", help="also time float training under bfloat16 autocast")
    p.add_argument(
        "--train-step-modes",
        nargs="+",
        choices=TRAIN_STEP_MODES[1:],
        default=None,
        help="training-step paths to time side by side (default: plain and graph on CUDA, plain on the CPU)",
    )
    p.add_argument(
        "--sb3",
        nargs="*",
        default=["sac", "td3", "ddpg"],
        help="SB3 agents whose 102-step update round to time (none: skip)",
    )
    p.add_argument("--skip-episodes", action="store_true", help="skip the search-episode timings (part 1's env work)")
    p.add_argument("--skip-ddpg", action="store_true", help="skip the HAQ-DDPG update timings")
    p.add_argument(
        "--prepare-budget-s",
        type=float,
        default=None,
        help="seconds after start at which preparing (compiling) training settings stops; the one under way is dropped",
    )
    p.add_argument(
        "--wait-for",
        default=None,
        metavar="FILE",
        help="prepare the training settings, then wait for FILE (another job on the device done) before timing",
    )
    p.add_argument("--wait-until-s", type=float, default=None, help="stop waiting for --wait-for this long after start")
    p.add_argument(
        "--time-limit-s", type=float, default=None, help="start no timing round later than this long after start"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default=None, help="JSON file for the numbers")
    args = p.parse_args()
    start = time.perf_counter()
    device = torch_device(args.device)
    if device.type == "cpu":
        configure_cpu_runtime()
    else:
        torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    result: dict = {
        "device": name,
        "torch": torch.__version__,
        "val_images": args.val_images,
        "train_images": args.train_images,
        "seed": args.seed,
        "load_average_at_start": os.getloadavg(),
    }
    if not args.skip_episodes:
        result["episode_s"] = episode_seconds(
            device, args.val_images, args.train_images, args.episodes, False, args.seed
        )
        print(f"episode (evaluate {args.val_images} images): {result['episode_s']:.3f} s", flush=True)
        result["episode_finetune_s"] = episode_seconds(
            device, args.val_images, args.train_images, args.episodes, True, args.seed
        )
        print(f"episode with 1-epoch finetune on {args.train_images}: {result['episode_finetune_s']:.3f} s", flush=True)
    result["ddpg_update_s"] = {}
    for graphed in [] if args.skip_ddpg else [True, False] if device.type == "cuda" else [False]:
        label = "cuda-graph" if graphed else "plain"
        result["ddpg_update_s"][label] = ddpg_update_seconds(device, args.episodes, args.seed, graphed)
        print(f"HAQ-DDPG updates per episode ({label}): {result['ddpg_update_s'][label]:.3f} s", flush=True)
    result["sb3_update_s"] = {}
    for algo in args.sb3:
        result["sb3_update_s"][algo] = sb3_update_seconds(device, algo, args.episodes, args.seed)
        print(f"SB3 {algo} 102 gradient steps (batch 64): {result['sb3_update_s'][algo]:.3f} s", flush=True)
    modes = args.train_step_modes or (["plain", "graph"] if device.type == "cuda" else ["plain"])
    # Every compiled setting adds entries for the same function (TrainStep._forward_loss); past Dynamo's
    # limit (8) it would run the rest eagerly and this table would time eager code as "compiled".
    dynamo_config = torch._dynamo.config
    setattr(dynamo_config, "recompile_limit" if hasattr(dynamo_config, "recompile_limit") else "cache_size_limit", 64)
    settings = [(k, m) for m in modes for k in ("float", "lsq-w4a4")] + ([("float-bf16", "plain")] if args.bf16 else [])

    def report(training: dict) -> None:
        result["training"] = training
        rates = training.get("images_per_s", {})
        result["train_images_per_s"] = rates
        result["qat_float_ratio"] = {b: qat_float_ratios(r, modes) for b, r in rates.items()}
        if args.output:
            write_json(Path(args.output), result)

    deadlines = {
        "prepare": _deadline(start, args.prepare_budget_s),
        "wait": _deadline(start, args.wait_until_s),
        "time": _deadline(start, args.time_limit_s),
    }
    time_training(device, args.batch_sizes, settings, args.train_steps, args.seed, deadlines, args.wait_for, report)
    for batch, rates in result.get("train_images_per_s", {}).items():
        print(f"batch {batch}: " + ", ".join(f"{k} {v:.0f} img/s" for k, v in rates.items()), flush=True)
        ratios = result["qat_float_ratio"][batch]
        print(f"batch {batch}: QAT/float step time " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()), flush=True)
    result["load_average_at_end"] = os.getloadavg()
    if args.output:
        write_json(Path(args.output), result)
    print(json.dumps(result, indent=1))


def _deadline(start: float, seconds: float | None) -> float | None:
    return None if seconds is None else start + seconds


def write_json(path: Path, result: dict) -> None:
    """Replace ``path`` atomically: a run stopped mid-write leaves the previous numbers."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
