"""K-means weight sharing: the 1-D clustering, the quantizer's caching, eval/train semantics and HAQ's re-projection."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import haq_gym.quant.kmeans_quantizer as kmq
from haq_gym.quant import wrap_model
from haq_gym.quant.kmeans_quantizer import KMeansWeightQuantizer, kmeans_1d, use_kmeans_weights


def heavy_tailed(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_t(4, size=n) * 0.05


@pytest.mark.parametrize("k", [2, 16, 256])
def test_kmeans_1d_is_a_lloyd_fixed_point(k: int) -> None:
    x = heavy_tailed(20_000)
    c, labels = kmeans_1d(x, k)
    assert c.shape == (k,) and np.all(np.diff(c) >= 0) and labels.min() >= 0 and labels.max() < k
    for j in np.unique(labels):  # every centroid is the mean of its cluster
        assert c[j] == pytest.approx(x[labels == j].mean(), rel=1e-9, abs=1e-12)
    used = np.unique(labels)
    nearest = used[np.abs(x[:, None] - c[used][None, :]).argmin(axis=1)]
    assert np.mean(c[nearest] == c[labels]) > 0.999  # every value sits with its nearest centroid (ties aside)


def test_kmeans_1d_beats_sklearn_with_haqs_settings() -> None:
    from sklearn.cluster import KMeans

    x = heavy_tailed(8_000, seed=1)
    for k in (4, 32):
        c, labels = kmeans_1d(x, k)
        ours = np.mean((c[labels] - x) ** 2)
        km = KMeans(n_clusters=k, init="k-means++", n_init=1, max_iter=3, random_state=0).fit(x[:, None])
        theirs = np.mean((km.cluster_centers_[km.labels_, 0] - x) ** 2)
        assert ours <= theirs * 1.001, (k, ours, theirs)


def test_kmeans_1d_few_distinct_values_is_exact_and_deterministic() -> None:
    x = np.array([0.5, -1.0, 0.5, 2.0, -1.0])
    c, labels = kmeans_1d(x, 8)
    assert np.array_equal(c[labels], x) and c.shape == (8,)
    y = heavy_tailed(5_000)
    a, b = kmeans_1d(y, 16), kmeans_1d(y, 16)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    with pytest.raises(ValueError, match="non-finite"):
        kmeans_1d(np.array([0.0, np.nan]), 2)


def test_quantizer_caches_one_clustering_per_bit_width(monkeypatch) -> None:
    calls = []
    real = kmq.cluster_weight
    monkeypatch.setattr(kmq, "cluster_weight", lambda w, b: calls.append(b) or real(w, b))
    q = KMeansWeightQuantizer().eval()
    w = torch.randn(32, 16, 3, 3)
    for bits in (3, 5, 3, 5, 3):
        q.set_bits(bits)
        out = q(w)
        assert out.unique().numel() <= 2**bits and out.shape == w.shape
    assert calls == [3, 5]
    q.reset_calibration()
    q(w)
    assert calls == [3, 5, 3]
    q.set_bits(None)
    assert q(w) is w
    with pytest.raises(ValueError, match=r"1\.\.8 bits"):
        q.set_bits(9)


def test_eval_weight_equals_codebook_and_follows_weight_changes() -> None:
    q = KMeansWeightQuantizer().eval()
    q.set_bits(2)
    w = torch.randn(64, 8)
    centroids, labels = q.codebook(w)
    assert centroids.dtype == torch.float32 and labels.dtype == torch.uint8
    assert torch.equal(q(w), centroids[labels.long()].view_as(w))
    with torch.no_grad():
        w.add_(1.0)  # the same assignment, new shared values (cluster means of the current weights)
    assert torch.allclose(q(w), (centroids + 1.0)[labels.long()].view_as(w), atol=1e-5)


def test_finetune_step_matches_haq_centroid_reprojection() -> None:
    """SGD steps (momentum, weight decay) through the quantizer = HAQ's steps on the clustered weight, re-projected."""
    torch.manual_seed(0)
    layer = nn.Linear(20, 6)
    ((_, qlayer),) = wrap_model(nn.Sequential(layer))
    use_kmeans_weights([qlayer])
    qlayer.set_bits(2, -1)
    x, y = torch.randn(16, 20), torch.randint(0, 6, (16,))
    centroids, labels = qlayer.weight_quantizer.codebook(qlayer.weight)
    labels = labels.long()

    # HAQ: the weight *is* the clustered weight; step, then replace each weight by its cluster's mean.
    haq_w = centroids[labels].view_as(qlayer.weight).clone().requires_grad_(True)
    haq_b = qlayer.bias.detach().clone().requires_grad_(True)
    opt = torch.optim.SGD([haq_w, haq_b], lr=0.1, momentum=0.9, weight_decay=1e-2)
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(nn.functional.linear(x, haq_w, haq_b), y).backward()
        opt.step()
        with torch.no_grad():
            flat = haq_w.reshape(-1)
            haq_centroids = torch.stack([flat[labels == j].mean() for j in range(4)])
            haq_w.copy_(haq_centroids[labels].view_as(haq_w))

    qlayer.train()
    opt = torch.optim.SGD(qlayer.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    with torch.no_grad():  # start from the clustered weight too, so weight decay acts on the same values
        qlayer.weight.copy_(centroids[labels].view_as(qlayer.weight))
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(qlayer(x), y).backward()
        opt.step()
    new_centroids, new_labels = qlayer.weight_quantizer.codebook(qlayer.weight)
    assert torch.equal(new_labels.long(), labels)
    assert torch.allclose(new_centroids, haq_centroids, atol=1e-6)
    assert not torch.allclose(new_centroids, centroids)


def test_use_kmeans_weights_keeps_bits_and_input_quantizer() -> None:
    ((_, qlayer),) = wrap_model(nn.Sequential(nn.Conv2d(3, 4, 3)))
    qlayer.set_bits(4, -1)
    inp = qlayer.input_quantizer
    use_kmeans_weights([qlayer])
    assert isinstance(qlayer.weight_quantizer, KMeansWeightQuantizer)
    assert qlayer.input_quantizer is inp and qlayer.w_bit == 4 and qlayer.a_bit == -1
    wq = qlayer.weight_quantizer
    use_kmeans_weights([qlayer])
    assert qlayer.weight_quantizer is wq  # already k-means: left alone (its cache survives)
