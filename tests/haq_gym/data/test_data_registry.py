"""Name lookup, argument validation and the shared split rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from haq_gym.data import dataset_names, load_dataset
from haq_gym.data.splits import split_pool


def test_dataset_names() -> None:
    assert dataset_names() == ("digits", "cifar10", "cifar100", "fashion-mnist", "mnist", "imagefolder")


def test_unknown_name_lists_available() -> None:
    with pytest.raises(
        ValueError, match=r"unknown dataset 'svhn'.*digits, cifar10, cifar100, fashion-mnist, mnist, imagefolder"
    ):
        load_dataset("svhn")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"val_size": 0}, r"val_size=0 .* pool of 1437 images"),
        ({"val_size": -5}, r"val_size=-5 .* pool of 1437 images"),
        ({"val_size": 1437}, r"val_size=1437 .* less than 1437"),
        ({"train_size": 1078}, r"train_size=1078 .* 1437 images .* leaving 1077"),
        ({"train_size": 0}, r"train_size=0 .* between 1 and 1077"),
        ({"val_size": 1400, "train_size": 38}, r"train_size=38 .* leaving 37"),
    ],
)
def test_bad_sizes(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_dataset("digits", **kwargs)


def test_fixed_image_size_datasets_reject_other_sizes(tmp_path: Path) -> None:
    assert load_dataset("digits", image_size=32).image_size == 32
    with pytest.raises(ValueError, match="digits images are 32x32; image_size=64"):
        load_dataset("digits", image_size=64)
    with pytest.raises(ValueError, match="cifar10 images are 32x32"):
        load_dataset("cifar10", tmp_path, image_size=224)


def test_imagefolder_cannot_download(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot be downloaded"):
        load_dataset("imagefolder", tmp_path, download=True)


def test_split_pool_partitions_and_maps_indices() -> None:
    pool = np.arange(100, 120)
    split = split_pool(pool, val_size=5, train_size=7, seed=4)
    assert len(split.search_val) == 5 and len(split.train) == 15
    assert sorted(split.search_val + split.train) == list(range(100, 120))
    assert split.search_train == split.train[:7]
    assert split_pool(pool, val_size=5, train_size=None, seed=4) == split_pool(pool, val_size=5, train_size=15, seed=4)


def test_split_pool_does_not_touch_global_random_state() -> None:
    np.random.seed(0)
    expected = np.random.rand()
    np.random.seed(0)
    split_pool(range(50), val_size=10, train_size=None, seed=1)
    assert np.random.rand() == expected


def test_split_pool_rejects_non_integers() -> None:
    with pytest.raises(TypeError):
        split_pool(range(50), val_size=2.5, train_size=None, seed=0)  # type: ignore[arg-type]
