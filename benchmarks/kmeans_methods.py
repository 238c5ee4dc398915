"""Time and quantization error of per-layer weight k-means: haq-gym's 1-D Lloyd versus scikit-learn.

Clusters every quantizable layer of a model at each bit width with
- ``1d``: :func:`haq_gym.quant.kmeans_quantizer.kmeans_1d` (sorted 1-D Lloyd, quantile init, to convergence);
- ``sklearn-haq``: scikit-learn ``KMeans(k-means++, n_init=1, max_iter=3)``, HAQ's search setting;
- ``sklearn-full``: the same run to convergence (``max_iter=300``);
- ``sklearn-sub``: ``sklearn-full`` fitted on a subsample of at most ``--subsample`` weights,
  then every weight assigned.
and prints, per method and bit width, the total seconds and the weight-count-weighted mean
squared error relative to the float weights' variance.

    python benchmarks/kmeans_methods.py --model mobilenetv2 --bits 2 4 8
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from haq_gym.models import build_model, load_checkpoint
from haq_gym.models.checkpoint import default_checkpoint_path
from haq_gym.models.registry import default_recipe
from haq_gym.quant import wrap_model
from haq_gym.quant.kmeans_quantizer import kmeans_1d
from haq_gym.runtime import configure_cpu_runtime


def sklearn_kmeans(
    x: np.ndarray, k: int, max_iter: int, seed: int, subsample: int | None
) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.cluster import KMeans

    k = min(k, np.unique(x).size)
    fit_on = x
    if subsample is not None and x.size > subsample:
        fit_on = np.random.default_rng(seed).choice(x, subsample, replace=False)
    km = KMeans(n_clusters=k, init="k-means++", n_init=1, max_iter=max_iter, random_state=seed).fit(fit_on[:, None])
    centroids = km.cluster_centers_.reshape(-1)
    return centroids, km.predict(x[:, None])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenetv2")
    parser.add_argument("--checkpoint", help="float checkpoint (default: the cached default digits model)")
    parser.add_argument("--bits", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--methods", nargs="+", default=["1d", "sklearn-haq", "sklearn-full", "sklearn-sub"])
    parser.add_argument("--subsample", type=int, default=16384)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    configure_cpu_runtime()
    net = build_model(args.model, num_classes=10)
    path = args.checkpoint or default_checkpoint_path(args.model, 1.0, "digits", default_recipe(args.model), 0)
    load_checkpoint(path, net)
    weights = [m.weight.detach().reshape(-1).double().numpy() for _, m in wrap_model(net)]
    total = sum(w.size for w in weights)
    print(f"{args.model}: {len(weights)} layers, {total} weights, checkpoint {path}")
    print(f"{'method':<14}{'bits':>5}{'seconds':>10}{'rel. MSE':>12}")
    for method in args.methods:
        for bits in args.bits:
            k = 2**bits
            start = time.perf_counter()
            err = 0.0
            for w in weights:
                if method == "1d":
                    c, lab = kmeans_1d(w, k)
                else:
                    max_iter = 3 if method == "sklearn-haq" else 300
                    sub = args.subsample if method == "sklearn-sub" else None
                    c, lab = sklearn_kmeans(w, k, max_iter, args.seed, sub)
                err += float(((c[lab] - w) ** 2).sum()) / float(w.var() + 1e-30)
            print(f"{method:<14}{bits:>5}{time.perf_counter() - start:>10.2f}{err / total:>12.3e}", flush=True)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
