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
   ``graph``: CUDA graph, ``compile``: torch.compile), and the QAT/float step-time ratios;
   with ``--bf16`` also float training under bfloat16 autocast (plain path; QAT stays
   float32: a bf16 cast of ``step * code`` is not exact, so the quantized grid would move).

Prints a markdown table and writes the numbers as JSON to ``--output``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
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


def train_images_per_s(device: torch.device, batch: int, kind: str, steps: int, seed: int, mode: str) -> float:
    """Training throughput of one step kind (``float``, ``float-bf16`` or ``lsq-w4a4``) through ``mode``."""
    torch.manual_seed(seed)
    model, named = build_quantized_model("mobilenetv2", 1.0, 100, None, "lsq")
    layers = [m for _, m in named]
    model.to(device=device, memory_format=CL)
    x = torch.randn(batch, 3, 32, 32, device=device).contiguous(memory_format=CL)
    y = torch.randint(0, 100, (batch,), device=device)
    if kind == "lsq-w4a4":
        apply_policy(layers, uniform_bits(len(layers), 4, 4))
        calibrate(model, layers, x)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=kind == "float-bf16")

    def loss_fn(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits, labels)

    step = TrainStep(model, loss_fn, mode=mode)
    times = []
    warmup = 3 if mode != "compile" else 6  # compile: the first call compiles, the next record graphs
    for i in range(steps + warmup):
        sync(device)
        t0 = time.perf_counter()
        with autocast:
            step(x, y)
        opt.step()
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return batch / statistics.median(times)


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
        help="training-step paths to time (default: plain and graph on CUDA, plain on the CPU)",
    )
    p.add_argument(
        "--sb3",
        nargs="*",
        default=["sac", "td3", "ddpg"],
        help="SB3 agents whose 102-step update round to time (none: skip)",
    )
    p.add_argument("--skip-episodes", action="store_true", help="skip the search-episode timings (part 1's env work)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default=None, help="JSON file for the numbers")
    args = p.parse_args()
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
    for graphed in [True, False] if device.type == "cuda" else [False]:
        label = "cuda-graph" if graphed else "plain"
        result["ddpg_update_s"][label] = ddpg_update_seconds(device, args.episodes, args.seed, graphed)
        print(f"HAQ-DDPG updates per episode ({label}): {result['ddpg_update_s'][label]:.3f} s", flush=True)
    result["sb3_update_s"] = {}
    for algo in args.sb3:
        result["sb3_update_s"][algo] = sb3_update_seconds(device, algo, args.episodes, args.seed)
        print(f"SB3 {algo} 102 gradient steps (batch 64): {result['sb3_update_s'][algo]:.3f} s", flush=True)
    modes = args.train_step_modes or (["plain", "graph"] if device.type == "cuda" else ["plain"])
    kinds = ["float", "lsq-w4a4"]
    result["train_images_per_s"] = {}
    result["qat_float_ratio"] = {}
    for batch in args.batch_sizes:
        rates = {
            f"{k}/{m}": train_images_per_s(device, batch, k, args.train_steps, args.seed, m)
            for m in modes
            for k in kinds
        }
        if args.bf16:
            rates["float-bf16/plain"] = train_images_per_s(
                device, batch, "float-bf16", args.train_steps, args.seed, "plain"
            )
        ratios = {m: rates[f"float/{m}"] / rates[f"lsq-w4a4/{m}"] for m in modes}
        ratios.update(
            {
                f"{m} QAT vs plain float": rates["float/plain"] / rates[f"lsq-w4a4/{m}"]
                for m in modes
                if m != "plain" and "plain" in modes
            }
        )
        result["train_images_per_s"][str(batch)] = rates
        result["qat_float_ratio"][str(batch)] = ratios
        print(f"batch {batch}: " + ", ".join(f"{k} {v:.0f} img/s" for k, v in rates.items()), flush=True)
        print(f"batch {batch}: QAT/float step time " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()), flush=True)
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
