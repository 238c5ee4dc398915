"""Dataset lookup by name: the single entry point the rest of haq-gym uses.

Names: ``digits`` (embedded), ``cifar10``, ``cifar100``, ``fashion-mnist``, ``mnist`` and
``imagefolder``.
"""

from __future__ import annotations

import os

from haq_gym.data.bundle import DataBundle
from haq_gym.data.cifar import IMAGE_SIZE as CIFAR_IMAGE_SIZE
from haq_gym.data.cifar import LAYOUTS as CIFAR_LAYOUTS
from haq_gym.data.cifar import load_cifar_bundle
from haq_gym.data.digits import IMAGE_SIZE as DIGITS_IMAGE_SIZE
from haq_gym.data.digits import load_digits_bundle
from haq_gym.data.image_folder import load_image_folder_bundle
from haq_gym.data.mnist import IMAGE_SIZE as MNIST_IMAGE_SIZE
from haq_gym.data.mnist import LAYOUTS as MNIST_LAYOUTS
from haq_gym.data.mnist import load_mnist_bundle

DEFAULT_IMAGE_FOLDER_SIZE = 224


def dataset_names() -> tuple[str, ...]:
    """Names accepted by :func:`load_dataset`; ``digits`` works offline with no data root."""
    return ("digits", *CIFAR_LAYOUTS, *MNIST_LAYOUTS, "imagefolder")


def _check_fixed_size(name: str, image_size: int | None, native: int) -> None:
    if image_size is not None and image_size != native:
        raise ValueError(f"{name} images are {native}x{native}; image_size={image_size} is not supported")


def load_dataset(
    name: str,
    root: str | os.PathLike[str] | None = None,
    *,
    val_size: int | None = None,
    train_size: int | None = None,
    split_seed: int = 0,
    download: bool = False,
    image_size: int | None = None,
    num_workers: int | None = None,
) -> DataBundle:
    """Load dataset ``name`` with its train / search-train / search-val / test splits.

    ``root`` is the folder holding the dataset files (unused by ``digits``, which is
    bundled with scikit-learn; for ``fashion-mnist``, None means the folder of Debian's
    ``dataset-fashion-mnist`` package). ``val_size``/``train_size`` default per dataset
    (digits: 360 / all 1077 remaining; CIFAR, Fashion-MNIST, MNIST: 10000 / 20000;
    imagefolder: HAQ's 10000 / 20000, or 10% / all remaining for a small tree). ``split_seed``
    fixes the splits independently of any run seed. ``download`` fetches CIFAR, Fashion-MNIST
    or MNIST when their files are missing. ``image_size`` defaults to 32 for digits, CIFAR and (Fashion-)MNIST (the only
    size they support; MNIST's 28x28 images are zero-padded) and 224 for imagefolder.
    ``num_workers``: DataLoader workers reading an imagefolder (default: up to 8).
    """
    if name == "digits":
        _check_fixed_size(name, image_size, DIGITS_IMAGE_SIZE)
        return load_digits_bundle(val_size=val_size, train_size=train_size, split_seed=split_seed)
    if name in CIFAR_LAYOUTS:
        _check_fixed_size(name, image_size, CIFAR_IMAGE_SIZE)
        return load_cifar_bundle(
            name, root, val_size=val_size, train_size=train_size, split_seed=split_seed, download=download
        )
    if name in MNIST_LAYOUTS:
        _check_fixed_size(name, image_size, MNIST_IMAGE_SIZE)
        return load_mnist_bundle(
            name, root, val_size=val_size, train_size=train_size, split_seed=split_seed, download=download
        )
    if name == "imagefolder":
        if download:
            raise ValueError("imagefolder datasets cannot be downloaded; point root at an existing image tree")
        return load_image_folder_bundle(
            root,
            image_size=DEFAULT_IMAGE_FOLDER_SIZE if image_size is None else image_size,
            val_size=val_size,
            train_size=train_size,
            split_seed=split_seed,
            num_workers=num_workers,
        )
    raise ValueError(f"unknown dataset {name!r}; available: {', '.join(dataset_names())}")


DATA_ROOT_HELP = (
    "dataset folder (CIFAR, ImageFolder, Fashion-MNIST/MNIST idx files; "
    "fashion-mnist defaults to the Debian package folder)"
)
"""The ``--data-root`` help that every command taking a dataset shows."""
