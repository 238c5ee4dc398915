"""The embedded digits dataset: split sizes, disjointness, normalisation, seeding."""

from __future__ import annotations

import pytest
import torch

from haq_gym.data import DataBundle, load_dataset, materialize


@pytest.fixture(scope="module")
def digits() -> DataBundle:
    return load_dataset("digits")


def test_split_sizes_cover_all_images(digits: DataBundle) -> None:
    assert (len(digits.train), len(digits.search_train), len(digits.search_val), len(digits.test)) == (
        1077,
        1077,
        360,
        360,
    )
    assert len(digits.train) + len(digits.search_val) + len(digits.test) == 1797


def test_splits_are_disjoint_and_search_train_is_inside_train(digits: DataBundle) -> None:
    train, val, test = (set(d.indices) for d in (digits.train, digits.search_val, digits.test))
    assert not train & val and not train & test and not val & test
    assert train | val | test == set(range(1797))
    assert set(digits.search_train.indices) <= train


def test_items_are_normalised_rgb_32x32(digits: DataBundle) -> None:
    image, label = digits.test[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert isinstance(label, int) and 0 <= label < 10
    assert torch.equal(image[0], image[1]) and torch.equal(image[0], image[2])
    assert (digits.num_classes, digits.image_size, digits.hflip) == (10, 32, False)


def test_train_is_normalised_to_zero_mean_unit_std(digits: DataBundle) -> None:
    images, labels = materialize(digits.train)
    assert images.shape == (1077, 3, 32, 32) and labels.dtype == torch.int64
    assert abs(images.mean().item()) < 0.05
    assert abs(images.std().item() - 1.0) < 0.05
    assert set(labels.tolist()) == set(range(10))


def test_background_pixel_maps_to_minus_mean_over_std(digits: DataBundle) -> None:
    images, _ = materialize(digits.test)
    black = -digits.mean[0] / digits.std[0]
    assert images.min().item() == pytest.approx(black, abs=1e-5)


def test_same_seed_same_splits_other_seed_other_splits(digits: DataBundle) -> None:
    again = load_dataset("digits", split_seed=0)
    other = load_dataset("digits", split_seed=1)
    assert again.train.indices == digits.train.indices
    assert again.search_val.indices == digits.search_val.indices
    assert again.test.indices == digits.test.indices
    assert set(other.train.indices) != set(digits.train.indices)
    assert set(other.test.indices) != set(digits.test.indices)


def test_custom_sizes(digits: DataBundle) -> None:
    small = load_dataset("digits", val_size=100, train_size=50)
    assert (len(small.train), len(small.search_train), len(small.search_val), len(small.test)) == (1337, 50, 100, 360)
    assert small.search_train.indices == small.train.indices[:50]
    assert small.test.indices == digits.test.indices
