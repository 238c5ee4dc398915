"""A generic ``train/<class>/*`` + ``val/<class>/*`` image tree (e.g. an ImageNet subset).

Images are read with PIL (torchvision's own decoders are unavailable on some platforms)
and given the usual evaluation transform: resize the short side to
``int(1.14 * image_size)``, center-crop ``image_size``, ToTensor, ImageNet Normalize.
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
) -> DataBundle:
    """Load an image tree; ``search_val`` is held out of ``train/``, ``test`` is ``val/`` (or ``test/``).

    Default ``val_size`` is 10% of the training images (at least 1); default
    ``train_size`` is all remaining ones. Class indices follow the sorted folder names,
    which must be the same in both directories.
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
    try:
        full_train = ImageFolder(str(train_dir), transform=transform, loader=_load_rgb)
        test = ImageFolder(str(test_dir), transform=transform, loader=_load_rgb)
    except FileNotFoundError as error:
        raise DatasetNotFoundError(f"{error} ({LAYOUT_HELP})") from error
    if test.classes != full_train.classes:
        raise ValueError(
            f"class folders differ: {train_dir} has {full_train.classes}, {test_dir} has {test.classes}"
        )

    pool_size = len(full_train)
    split = split_pool(
        range(pool_size),
        val_size=max(1, pool_size // 10) if val_size is None else val_size,
        train_size=train_size,
        seed=split_seed,
    )
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
    )
