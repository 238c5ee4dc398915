"""A generic ``train/<class>/*`` + ``val/<class>/*`` image tree (e.g. ImageNet or a subset of it).

Images are read with PIL (torchvision's own decoders are unavailable on some platforms).
Evaluation, calibration and the search use the standard ImageNet evaluation transform:
resize the short side to ``int(1.14 * image_size)``, center-crop ``image_size``, ToTensor,
Normalize. The finetune trains on the training pool with the standard training transform
(``RandomResizedCrop(image_size)``, horizontal flip), applied per image as the batches are
read from disk by DataLoader workers (``bundle.train_augmented``), so a training set that
does not fit in memory streams.

The split follows HAQ on ImageNet: 10,000 training images held out as the search's
validation subset and a 20,000-image train subset for calibration and per-episode
finetuning, by default; a tree too small for that holds out 10% (at least one image).
"""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image
from torch.utils.data import Subset

from haq_gym.data.bundle import DataBundle
from haq_gym.data.errors import DatasetNotFoundError
from haq_gym.data.splits import split_pool

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_RATIO = 1.14
HAQ_VAL_SIZE = 10_000
HAQ_TRAIN_SIZE = 20_000
TEST_DIR_NAMES = ("val", "test")
LAYOUT_HELP = (
    "expected ROOT/train/<class>/<image> and ROOT/val/<class>/<image> (or ROOT/test/<class>/<image>); "
    "pass --data-root ROOT"
)


def _load_rgb(path: str) -> Image.Image:
    """Open an image file with PIL as RGB."""
    with open(path, "rb") as handle:
        return Image.open(handle).convert("RGB")


def load_image_folder_bundle(
    root: str | os.PathLike[str] | None,
    *,
    image_size: int,
    val_size: int | None,
    train_size: int | None,
    split_seed: int,
    num_workers: int | None = None,
) -> DataBundle:
    """Load an image tree; ``search_val`` is held out of ``train/``, ``test`` is ``val/`` (or ``test/``).

    Default ``val_size`` is HAQ's 10,000 images, or 10% of the training images (at least 1)
    when 10,000 would take more than that; default ``train_size`` is HAQ's 20,000, or all
    remaining images when fewer remain. Class indices follow the sorted folder names, which
    must be the same in both directories. ``num_workers`` is the DataLoader worker count for
    reading images (default: up to 8, one per CPU core).
    """
    from haq_gym.compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    if root is None:
        raise DatasetNotFoundError(f"imagefolder needs a data root: {LAYOUT_HELP}")
    root_path = Path(root).expanduser()
    train_dir = root_path / "train"
    test_dir = next((root_path / d for d in TEST_DIR_NAMES if (root_path / d).is_dir()), None)
    if not train_dir.is_dir() or test_dir is None:
        absent = "train/" if not train_dir.is_dir() else "val/ or test/"
        raise DatasetNotFoundError(f"image folder {root_path} has no {absent}: {LAYOUT_HELP}")

    transform = transforms.Compose(
        [
            transforms.Resize(int(image_size * RESIZE_RATIO)),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    train_transform = transforms.Compose(
        [
            transforms.RandomResizedCrop(image_size),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    try:
        full_train = ImageFolder(str(train_dir), transform=transform, loader=_load_rgb)
        augmented_train = ImageFolder(str(train_dir), transform=train_transform, loader=_load_rgb)
        test = ImageFolder(str(test_dir), transform=transform, loader=_load_rgb)
    except FileNotFoundError as error:
        raise DatasetNotFoundError(f"{error} ({LAYOUT_HELP})") from error
    if test.classes != full_train.classes:
        raise ValueError(f"class folders differ: {train_dir} has {full_train.classes}, {test_dir} has {test.classes}")

    pool_size = len(full_train)
    if val_size is None:
        val_size = HAQ_VAL_SIZE if pool_size // 10 >= HAQ_VAL_SIZE else max(1, pool_size // 10)
    if train_size is None:
        train_size = min(HAQ_TRAIN_SIZE, pool_size - val_size) if pool_size > val_size else None
    split = split_pool(range(pool_size), val_size=val_size, train_size=train_size, seed=split_seed)
    return DataBundle(
        name="imagefolder",
        num_classes=len(full_train.classes),
        image_size=image_size,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        train=Subset(full_train, split.train),
        search_train=Subset(full_train, split.search_train),
        search_val=Subset(full_train, split.search_val),
        test=test,
        hflip=True,
        pad=image_size // 8,  # the translation range CIFAR's 4-of-32 pixels uses, scaled
        train_augmented=Subset(augmented_train, split.train),
        num_workers=min(8, os.cpu_count() or 1) if num_workers is None else num_workers,
    )
