"""Seconds per search episode versus one float forward pass over the same validation images.

The issue's target: an episode of the default env costs at most 1.5x a plain float
forward over the validation subset. Prints medians over repeats and their ratio.

    python benchmarks/env_speed.py --episodes 5 --seed 0
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym
import numpy as np
import torch

import haq_gym
from haq_gym.evaluation import top1_accuracy
from haq_gym.runtime import configure_cpu_runtime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="HAQ-MobileNetV2-v0")
    parser.add_argument("--episodes", type=int, default=5, help="timed episodes (each with a new random policy)")
    parser.add_argument("--warmup-episodes", type=int, default=20,
                        help="untimed episodes first: they choose and cache each (layer, bits) clip range")
    parser.add_argument("--repeats", type=int, default=5, help="timed float forward passes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width-mult", type=float, default=1.0)
    args = parser.parse_args()
    configure_cpu_runtime()
    haq_gym.register_envs()
    env = gym.make(args.env, width_mult=args.width_mult)
    setup = env.unwrapped.setup
    ev = setup.evaluator

    def float_pass() -> float:
        start = time.perf_counter()
        top1_accuracy(setup.model, ev.val_images, ev.val_labels, ev.batch_size)
        return time.perf_counter() - start

    rng = np.random.default_rng(args.seed)
    env.reset(seed=args.seed)
    cold, episodes, evals = [], [], []
    for i in range(args.warmup_episodes + args.episodes):
        env.reset()
        start = time.perf_counter()
        done = False
        while not done:
            _, _, done, _, info = env.step(rng.random(1, dtype=np.float32))
        elapsed = time.perf_counter() - start
        if i < args.warmup_episodes:
            cold.append(elapsed)
        else:
            episodes.append(elapsed)
            evals.append(info["eval_time_s"])
    from haq_gym.quant import apply_policy
    apply_policy(setup.layers, [[-1, -1]] * len(setup.layers))
    float_pass()
    floats = [float_pass() for _ in range(args.repeats)]
    ep, fl = statistics.median(episodes), statistics.median(floats)
    print(f"env {args.env} width {args.width_mult}: {len(ev.val_images)} validation images, torch threads {torch.get_num_threads()}")
    if cold:
        print(f"first {len(cold)} episodes (clip ranges chosen and cached): median {statistics.median(cold):.3f} s, "
              f"first {cold[0]:.3f} s")
    print(f"episode (median of {len(episodes)} after those): {ep:.3f} s   of which evaluation: {statistics.median(evals):.3f} s")
    print(f"float forward (median of {len(floats)}): {fl:.3f} s")
    print(f"ratio episode / float forward: {ep / fl:.2f}")


if __name__ == "__main__":
    main()
