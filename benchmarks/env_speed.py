"""Seconds per search episode versus one float forward pass over the same validation images.

The issue's target: an episode of the default env costs at most 1.5x a plain float
forward over the validation subset. Prints medians over repeats and their ratio.

    python benchmarks/env_speed.py --episodes 5 --seed 0

Any model on ImageNet-style data (docs/performance.md): ``--model torchvision:mobilenet_v2
--generate-imagefolder 1000 --random-init`` writes a tree of random 256x320 JPEGs in a
temporary folder, saves a seeded random-init float checkpoint, and searches at 224 px;
``--env-kwargs`` passes further env keywords (``val_size=10000 device=cuda``).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
import yaml

import haq_gym
from haq_gym.data.generated_tree import write_image_tree
from haq_gym.evaluation import top1_accuracy
from haq_gym.models import save_checkpoint
from haq_gym.models.spec import ModelSpec
from haq_gym.runtime import configure_cpu_runtime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="HAQ-MobileNetV2-v0")
    parser.add_argument("--episodes", type=int, default=5, help="timed episodes (each with a new random policy)")
    parser.add_argument(
        "--warmup-episodes",
        type=int,
        default=20,
        help="untimed episodes first: they choose and cache each (layer, bits) clip range",
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed float forward passes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width-mult", type=float, default=1.0)
    parser.add_argument("--model", help="model= of the env: a built-in name, torchvision:<name> or pkg.mod:builder")
    parser.add_argument(
        "--generate-imagefolder",
        type=int,
        metavar="N",
        help="write N random training JPEGs (10 classes, plus 10 validation images each) to a "
        "temporary folder and search dataset=imagefolder on it",
    )
    parser.add_argument(
        "--random-init",
        action="store_true",
        help="float weights: a seeded random initialisation saved to a temporary checkpoint",
    )
    parser.add_argument(
        "--env-kwargs",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="more env keywords (values parsed as YAML), e.g. val_size=10000 device=cuda",
    )
    args = parser.parse_args()
    configure_cpu_runtime()
    haq_gym.register_envs()
    kwargs: dict = {"width_mult": args.width_mult}
    for item in args.env_kwargs:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--env-kwargs expects key=value, got {item!r}")
        kwargs[key] = yaml.safe_load(value)
    scratch = Path(tempfile.mkdtemp(prefix="env_speed_"))
    if args.model is not None:
        kwargs["model"] = args.model
        if args.model.partition(":")[1]:
            kwargs.pop("width_mult")
    if args.generate_imagefolder:
        write_image_tree(
            scratch / "images",
            classes=10,
            train_per_class=-(-args.generate_imagefolder // 10),
            val_per_class=10,
            seed=args.seed,
            progress=True,
        )
        kwargs.update(dataset="imagefolder", data_root=str(scratch / "images"))
    if args.random_init:
        torch.manual_seed(args.seed)
        spec = ModelSpec(kwargs.get("model", "mobilenetv2"), width_mult=kwargs.get("width_mult", 1.0))
        save_checkpoint(scratch / "random_init.pt", spec.build(num_classes=10), {"note": "random init"})
        kwargs["checkpoint"] = str(scratch / "random_init.pt")
    start = time.perf_counter()
    env = gym.make(args.env, **kwargs)
    print(f"env built in {time.perf_counter() - start:.1f} s (data read, model traced, calibrated): {kwargs}")
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
    print(
        f"env {args.env} model {setup.model_name}: {len(ev.val_images)} validation images at "
        f"{setup.bundle.image_size} px, device {ev.device}, torch threads {torch.get_num_threads()}"
    )
    if cold:
        print(
            f"first {len(cold)} episodes (clip ranges chosen and cached): median {statistics.median(cold):.3f} s, "
            f"first {cold[0]:.3f} s"
        )
    print(
        f"episode (median of {len(episodes)} after those): {ep:.3f} s   "
        f"of which evaluation: {statistics.median(evals):.3f} s"
    )
    print(f"float forward (median of {len(floats)}): {fl:.3f} s")
    print(f"ratio episode / float forward: {ep / fl:.2f}")
    env.close()
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
