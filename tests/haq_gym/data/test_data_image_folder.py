"""Image-folder trees written with PIL: classes, transform, splits, layout errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from haq_gym.data import DatasetNotFoundError, load_dataset, materialize

CLASSES = ("cat", "dog", "eel")
SIZES = ((40, 30), (64, 64), (33, 50), (48, 36))


def write_tree(root: Path, test_dir: str = "val", train_per_class: int = 4) -> None:
    rng = np.random.default_rng(0)
    for split, count in (("train", train_per_class), (test_dir, 2)):
        for _label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                width, height = SIZES[i % len(SIZES)]
                pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
                image = Image.fromarray(pixels) if i % 2 else Image.fromarray(pixels[..., 0], mode="L")
                image.save(folder / f"{name}_{i}.{'png' if i % 3 else 'jpg'}")


def test_classes_shapes_and_splits(tmp_path: Path) -> None:
    write_tree(tmp_path)
    bundle = load_dataset("imagefolder", tmp_path, image_size=32, split_seed=1)
    assert (bundle.name, bundle.num_classes, bundle.image_size, bundle.hflip, bundle.pad) == (
        "imagefolder",
        3,
        32,
        True,
        4,
    )
    # 12 training images: default val_size = 10% -> 1, train_size = all 11 remaining.
    assert (len(bundle.train), len(bundle.search_train), len(bundle.search_val), len(bundle.test)) == (11, 11, 1, 6)
    assert set(bundle.train.indices) | set(bundle.search_val.indices) == set(range(12))
    assert not set(bundle.train.indices) & set(bundle.search_val.indices)

    images, _labels = materialize(bundle.train)
    assert images.shape == (11, 3, 32, 32) and images.dtype == torch.float32
    _, test_labels = materialize(bundle.test)
    assert test_labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert bundle.train.dataset.classes == list(CLASSES)


def test_normalisation_uses_imagenet_statistics(tmp_path: Path) -> None:
    folder = tmp_path / "train" / "white"
    folder.mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (50, 40), (255, 255, 255)).save(folder / f"{i}.png")
    (tmp_path / "test" / "white").mkdir(parents=True)
    Image.new("RGB", (20, 20), (0, 0, 0)).save(tmp_path / "test" / "white" / "black.png")
    bundle = load_dataset("imagefolder", tmp_path, image_size=16)
    white, _ = bundle.train[0]
    black, _ = bundle.test[0]
    mean, std = torch.tensor(bundle.mean).view(3, 1, 1), torch.tensor(bundle.std).view(3, 1, 1)
    assert torch.allclose(white, ((1 - mean) / std).expand(3, 16, 16), atol=1e-5)
    assert torch.allclose(black, (-mean / std).expand(3, 16, 16), atol=1e-5)


def test_test_dir_and_custom_sizes(tmp_path: Path) -> None:
    write_tree(tmp_path, test_dir="test", train_per_class=5)
    bundle = load_dataset("imagefolder", tmp_path, image_size=24, val_size=3, train_size=4)
    assert (len(bundle.train), len(bundle.search_train), len(bundle.search_val), len(bundle.test)) == (12, 4, 3, 6)
    assert bundle.train[0][0].shape == (3, 24, 24)


def test_default_image_size_is_224(tmp_path: Path) -> None:
    write_tree(tmp_path)
    bundle = load_dataset("imagefolder", tmp_path)
    assert bundle.image_size == 224 and bundle.test[0][0].shape == (3, 224, 224)


def test_missing_root_and_train_dir(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="train/<class>"):
        load_dataset("imagefolder", tmp_path / "nowhere", image_size=32)
    with pytest.raises(FileNotFoundError, match="--data-root"):
        load_dataset("imagefolder", None)
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match=r"no val/ or test/.*ROOT/val/<class>"):
        load_dataset("imagefolder", tmp_path, image_size=32)


def test_empty_train_dir(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    with pytest.raises(DatasetNotFoundError, match="ROOT/train/<class>/<image>"):
        load_dataset("imagefolder", tmp_path, image_size=32)


def test_class_mismatch(tmp_path: Path) -> None:
    write_tree(tmp_path)
    (tmp_path / "val" / "fox").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "val" / "fox" / "x.png")
    with pytest.raises(ValueError, match="class folders differ"):
        load_dataset("imagefolder", tmp_path, image_size=32)
