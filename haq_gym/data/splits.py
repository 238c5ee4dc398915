"""Seeded splitting of a training pool into train / search-train / search-val indices.

All loaders share this so that the split rules (and their error messages) are the same
for every dataset. The split depends only on ``seed``: it uses its own numpy generator,
never the global random state, so it is independent from any run seed.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PoolSplit:
    """Indices (into the dataset the pool was drawn from) of the three training-pool splits.

    ``train`` is the pool minus ``search_val``; ``search_train`` is the first
    ``train_size`` entries of ``train`` (which is in shuffled order).
    """

    train: list[int]
    search_train: list[int]
    search_val: list[int]


def split_pool(
    pool_indices: Sequence[int] | np.ndarray,
    *,
    val_size: int,
    train_size: int | None,
    seed: int,
) -> PoolSplit:
    """Shuffle the pool with ``seed``; the first ``val_size`` become search-val, the rest train.

    ``train_size=None`` means all of the remaining pool. Raises ValueError when the sizes
    do not fit the pool, stating the pool size and what was asked.
    """
    pool = np.asarray(pool_indices, dtype=np.int64)
    pool_size = int(pool.shape[0])
    val_size = operator.index(val_size)
    if val_size < 1 or val_size >= pool_size:
        raise ValueError(
            f"val_size={val_size} does not fit a training pool of {pool_size} images: "
            f"it must be at least 1 and less than {pool_size} so that some training images remain"
        )
    remaining = pool_size - val_size
    train_size = remaining if train_size is None else operator.index(train_size)
    if train_size < 1 or train_size > remaining:
        raise ValueError(
            f"train_size={train_size} does not fit: the training pool has {pool_size} images and "
            f"val_size={val_size} of them are held out, leaving {remaining}; "
            f"train_size must be between 1 and {remaining}"
        )
    order = pool[np.random.default_rng(seed).permutation(pool_size)]
    train = order[val_size:].tolist()
    return PoolSplit(train=train, search_train=train[:train_size], search_val=order[:val_size].tolist())
