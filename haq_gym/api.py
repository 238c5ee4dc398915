"""A Python API for people who do not use the command lines: search, finetune and export, with typed results.

::

    import haq_gym

    found = haq_gym.search(algo="haq-ddpg", episodes=60, seed=0, env_kwargs={"latency_budget": 0.4})
    tuned = haq_gym.finetune_policy(found.best_policy, epochs=30, seed=0)
    packed = haq_gym.export_policy(checkpoint=tuned.best_checkpoint, out="model.hqpk")

Each call does what its command does (``train_agent.py``, ``python -m haq_gym.finetune``,
``python -m haq_gym.export export``) through the same library code, and writes the same
run folders and files. The finetune and export are named ``finetune_policy`` and
``export_policy`` because ``haq_gym.finetune`` and ``haq_gym.export`` are subpackages.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from haq_gym.policy import PolicyFile

if TYPE_CHECKING:
    from haq_gym.runs import RunResult


@dataclass(frozen=True)
class FinetuneResult:
    """A finished finetune: top-1 in percent; ``best_checkpoint`` is the epoch with the best validation top-1."""

    run_dir: Path
    best_checkpoint: Path
    best_epoch: int
    best_val_top1: float
    best_test_top1: float
    last_test_top1: float


@dataclass(frozen=True)
class ExportResult:
    """A written packed integer model and, unless skipped, its test-split check against the fake-quant model."""

    path: Path
    file_bytes: int
    layers: int
    flash_bits: int
    integer_top1: float | None
    fake_quant_top1: float | None


def search(
    algo: str = "haq-ddpg",
    env: str = "HAQ-MobileNetV2-v0",
    *,
    episodes: int | None = None,
    seed: int = 0,
    env_kwargs: dict[str, Any] | None = None,
    hyperparams: dict[str, Any] | None = None,
    output: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> RunResult:
    """Search a policy with ``algo`` on the registered ``env``, as ``train_agent.py`` does; returns the run's result.

    Hyperparameters are the algorithm's installed ``configs/<algo>.yml`` entry for ``env``
    updated with ``hyperparams``; ``episodes`` defaults to that entry's ``n_episodes``.
    ``env_kwargs`` are ``gym.make`` keywords (any model and data: docs/models_and_data.md).
    A thin front over :func:`haq_gym.runs.run_search`.
    """
    from haq_gym.algo_configs import algo_defaults
    from haq_gym.runs import RunConfig, run_search

    hyper = {**algo_defaults(algo, env), **(hyperparams or {})}
    n_episodes = hyper.pop("n_episodes", None) if episodes is None else episodes
    hyper.pop("n_episodes", None)
    if n_episodes is None:
        raise ValueError(f"no episode budget: pass episodes= (configs/{algo}.yml has no n_episodes for {env})")
    if int(n_episodes) < 1:
        raise ValueError(f"episodes must be at least 1, got {n_episodes}")
    config = RunConfig(
        algo=algo,
        env=env,
        seed=int(seed),
        n_episodes=int(n_episodes),
        env_kwargs=dict(env_kwargs or {}),
        hyperparams=hyper,
    )
    out = None if output is None else os.fspath(output)
    return run_search(config, out, progress, command=f"haq_gym.search(algo={algo!r}, env={env!r}, seed={seed})")


def finetune_policy(
    policy: str | os.PathLike[str] | PolicyFile | Sequence[Sequence[int]] | None = None,
    *,
    uniform: tuple[int, int] | None = None,
    model: str = "mobilenetv2",
    width_mult: float = 1.0,
    model_kwargs: dict[str, Any] | None = None,
    weights: str | None = None,
    dataset: str = "digits",
    data_root: str | None = None,
    image_size: int | None = None,
    quantizer: str = "lsq",
    init_checkpoint: str | os.PathLike[str] | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    output: str | os.PathLike[str] | None = None,
    seed: int = 0,
    device: str = "cpu",
    train_step: str | None = None,
    progress: bool = True,
) -> FinetuneResult:
    """LSQ finetune of a policy (a policy file or :class:`PolicyFile`, or a HAQ strategy list for ``model``), or of
    a uniform ``(w_bit, a_bit)`` precision; the model, dataset and width of a policy file win over the keywords.
    ``train_step``: how each step runs (:mod:`haq_gym.train_step`; default ``$HAQ_GYM_TRAIN_STEP``, else ``auto``)."""
    from haq_gym.finetune.command import build_parser, run_finetune

    if (policy is None) == (uniform is None):
        raise ValueError("give either a policy or uniform=(w_bit, a_bit)")
    with tempfile.TemporaryDirectory() as scratch:
        argv: list[str] = []
        if isinstance(policy, PolicyFile):
            policy.save(Path(scratch) / "policy.json")
            argv += ["--policy", os.fspath(Path(scratch) / "policy.json")]
        elif isinstance(policy, (str, os.PathLike)):
            argv += ["--policy", os.fspath(policy)]
        elif policy is not None:
            argv += ["--policy", str([[int(w), int(a)] for w, a in policy])]
        else:
            assert uniform is not None
            argv += ["--w-bits", str(uniform[0]), "--a-bits", str(uniform[1])]
        options: dict[str, Any] = {
            "model": model,
            "width_mult": width_mult,
            "weights": weights,
            "dataset": dataset,
            "data_root": data_root,
            "image_size": image_size,
            "quantizer": quantizer,
            "init_checkpoint": init_checkpoint,
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "output": output,
            "seed": seed,
            "device": device,
            "train_step": train_step,
        }
        if model_kwargs:
            options["model_kwargs"] = yaml.safe_dump(model_kwargs, default_flow_style=True).strip()
        for key, value in options.items():
            if value is not None:
                argv += [
                    f"--{key.replace('_', '-')}",
                    os.fspath(value) if isinstance(value, os.PathLike) else str(value),
                ]
        if not progress:
            argv.append("--no-progress")
        try:
            args = build_parser().parse_args(argv)
        except SystemExit:
            raise ValueError(f"invalid finetune options: {argv}") from None
        run_dir, result = run_finetune(args)
    return FinetuneResult(
        Path(run_dir),
        Path(run_dir) / "best.pt",
        result.best_epoch,
        result.best_val_top1,
        result.best_test_top1,
        result.last_top1,
    )


def export_policy(
    policy: str | os.PathLike[str] | PolicyFile | Sequence[Sequence[int]] | None = None,
    *,
    out: str | os.PathLike[str],
    checkpoint: str | os.PathLike[str] | None = None,
    uniform: tuple[int, int] | None = None,
    model: str = "mobilenetv2",
    width_mult: float = 1.0,
    dataset: str = "digits",
    data_root: str | None = None,
    float_checkpoint: str | None = None,
    calibration_size: int = 64,
    evaluate: bool = True,
    batch_size: int = 128,
) -> ExportResult:
    """Write the packed integer model of a QAT ``checkpoint``, a policy, or a uniform precision; then (unless
    ``evaluate=False``) load it back and compare integer and fake-quant top-1 on the test split."""
    from haq_gym.export.build import export_integer_model
    from haq_gym.export.cli import evaluate as evaluate_file
    from haq_gym.export.packed_file import load_integer_model, write_packed_file
    from haq_gym.export.source import source_from_checkpoint, source_from_policy

    if sum(x is not None for x in (policy, checkpoint, uniform)) != 1:
        raise ValueError("give exactly one of a policy, checkpoint= or uniform=(w_bit, a_bit)")
    if checkpoint is not None:
        source = source_from_checkpoint(checkpoint, data_root=data_root, calibration_size=calibration_size)
    else:
        bits = PolicyFile.load(policy) if isinstance(policy, (str, os.PathLike)) else policy
        source = source_from_policy(
            bits,
            uniform=uniform,
            model=model,
            width_mult=width_mult,
            dataset=dataset,
            data_root=data_root,
            float_checkpoint=float_checkpoint,
            calibration_size=calibration_size,
        )
    integer = export_integer_model(source.model, source.layers, source.calibration_images, meta=source.meta)
    sizes = write_packed_file(out, integer, include_integer_model=True)
    integer_top1 = fake_top1 = None
    if evaluate:
        images, labels = source.test_split()
        checked = evaluate_file(load_integer_model(out), images, labels, batch_size, source)
        integer_top1, fake_top1 = checked["integer_top1"], checked.get("fake_quant_top1")
    return ExportResult(Path(out), sizes.total, len(integer.layers), source.flash_bits, integer_top1, fake_top1)
