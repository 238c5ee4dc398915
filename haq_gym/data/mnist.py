"""Fashion-MNIST and MNIST from their standard idx files, as 32x32 three-channel images.

Both datasets are four idx files (60000 training and 10000 test grey 28x28 images with
their labels, 10 classes). The loader finds them flat in a folder (as Debian's
``dataset-fashion-mnist`` package installs them in /usr/share/datasets/fashion-mnist, the
folder used when no data root is given) or in ``<root>/FashionMNIST/raw/`` (as
torchvision's download writes them), each gzipped or not, and reads them with
:mod:`haq_gym.data.idx` rather than ``torchvision.datasets``: tests can then load
generated files through this exact path, and torchvision is only needed to download.

The 28x28 images are zero-padded by 2 pixels per side to 32x32 and repeated to three
channels, so the CIFAR-style networks apply unchanged. They stay uint8 in memory (one
stored grey plane, viewed as three identical channels); items are produced as
``Normalize(mean, std)(ToTensor()(img))`` would produce them, with mean/std computed on
the 60000 padded training images.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Subset

from haq_gym.data.bundle import DataBundle
from haq_gym.data.errors import DatasetNotFoundError
from haq_gym.data.idx import read_idx_images, read_idx_labels
from haq_gym.data.splits import split_pool
from haq_gym.data.tensor_dataset import ImageTensorDataset

IMAGE_SIZE = 32
SOURCE_SIZE = 28
BORDER = (IMAGE_SIZE - SOURCE_SIZE) // 2
NUM_CLASSES = 10
# Random translation of up to 2 pixels: the width of the black border added around the images.
PAD = 2
# HAQ's search split: 10k held-out reward images, 20k images for calibration/finetune.
DEFAULT_VAL_SIZE = 10_000
DEFAULT_TRAIN_SIZE = 20_000
# Where Debian's package dataset-fashion-mnist installs the four gzipped idx files.
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
FILE_NAMES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)


@dataclass(frozen=True)
class MnistLayout:
    """One MNIST-format variant: its name, where its files live and whether flips keep labels valid."""

    name: str
    title: str
    torchvision_class: str
    hflip: bool
    # Folder searched when no data root is given, and the package that installs it there.
    default_folder: Path | None = None
    apt_package: str | None = None


LAYOUTS: dict[str, MnistLayout] = {
    "fashion-mnist": MnistLayout(
        name="fashion-mnist",
        title="Fashion-MNIST",
        torchvision_class="FashionMNIST",
        hflip=True,
        default_folder=DEBIAN_FASHION_MNIST_DIR,
        apt_package="dataset-fashion-mnist",
    ),
    "mnist": MnistLayout(name="mnist", title="MNIST", torchvision_class="MNIST", hflip=False),
}


def _folders(layout: MnistLayout, root: Path | None) -> list[Path]:
    if root is None:
        return [] if layout.default_folder is None else [layout.default_folder]
    return [root / layout.torchvision_class / "raw", root]


def _find_in(folder: Path) -> dict[str, Path] | None:
    """The four files in ``folder`` (``NAME`` preferred over ``NAME.gz``), or None when one is missing."""
    found: dict[str, Path] = {}
    for name in FILE_NAMES:
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                found[name] = candidate
                break
        else:
            return None
    return found


def _find_files(layout: MnistLayout, root: Path | None) -> dict[str, Path] | None:
    """The four files from the first searched folder that holds all of them, or None."""
    for folder in _folders(layout, root):
        found = _find_in(folder)
        if found is not None:
            return found
    return None


def _not_found(layout: MnistLayout, root: Path | None, detail: str = "") -> DatasetNotFoundError:
    folders = _folders(layout, root)
    where = "looked in " + " and ".join(map(str, folders)) if folders else "no data root was given"
    offline = ""
    if layout.apt_package is not None and layout.default_folder is not None:
        offline = (
            f"Offline: `apt-get install {layout.apt_package}` puts them in {layout.default_folder}, "
            "which is used when no data root is given. "
        )
    return DatasetNotFoundError(
        f"{layout.title} not found ({where}{'; ' + detail if detail else ''}). Expected the four idx files "
        f"{', '.join(FILE_NAMES)} in one folder, each as NAME.gz or uncompressed NAME. Pass --data-root DIR "
        f"pointing at a folder that holds them (directly, or in {layout.torchvision_class}/raw/ as torchvision "
        f"writes them). {offline}Or pass download=True (env keyword download=true) on a machine with internet access."
    )


def _download(layout: MnistLayout, root: Path) -> None:
    """Fetch the four files into ``root/<TorchvisionClass>/raw/`` with torchvision (which checks their md5)."""
    from haq_gym.compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    from torchvision import datasets

    source = getattr(datasets, layout.torchvision_class)
    try:
        for train in (True, False):
            source(str(root), train=train, download=True)
    except (OSError, RuntimeError, EOFError) as error:
        raise _not_found(layout, root, f"download failed: {error}") from error


def read_image_label_files(images_path: Path, labels_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Read one split into (uint8 images [N,28,28], int64 labels [N]), checking that they belong together.

    Raises ValueError when the images are not 28x28, the label and image counts differ, or
    a label lies outside 0..9.
    """
    images = read_idx_images(images_path)
    labels = read_idx_labels(labels_path)
    if tuple(images.shape[1:]) != (SOURCE_SIZE, SOURCE_SIZE):
        raise ValueError(
            f"{images_path}: expected {SOURCE_SIZE}x{SOURCE_SIZE} images, found {images.shape[1]}x{images.shape[2]}"
        )
    if labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{labels_path} holds {labels.shape[0]} labels but {images_path} holds {images.shape[0]} images; "
            "expected one label per image"
        )
    if labels.numel() and int(labels.max()) >= NUM_CLASSES:
        raise ValueError(
            f"{labels_path}: labels must lie in 0..{NUM_CLASSES - 1}, found {int(labels.min())}..{int(labels.max())}"
        )
    return images, labels.to(torch.int64)


def pad_to_rgb(images: torch.Tensor) -> torch.Tensor:
    """Zero-pad uint8 [N,28,28] to [N,3,32,32]: 2 black pixels per side, one grey plane seen as 3 channels.

    The channels are an expanded view of one stored plane (no copy); indexing an item and
    converting it to float gives an ordinary [3,32,32] tensor.
    """
    count = images.shape[0]
    padded = torch.zeros((count, 1, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.uint8)
    padded[:, 0, BORDER : BORDER + SOURCE_SIZE, BORDER : BORDER + SOURCE_SIZE] = images
    return padded.expand(-1, 3, -1, -1)


def padded_mean_std(images: torch.Tensor) -> tuple[float, float]:
    """Mean and (Bessel-corrected) std in [0, 1] over all pixels of uint8 [N,28,28] images padded to 32x32.

    Computed from the 256-bin histogram (plus the padding's zeros) in float64: the same
    figures as over the padded float images, without materialising them.
    """
    counts = np.bincount(images.numpy().ravel(), minlength=256).astype(np.float64)
    counts[0] += images.shape[0] * (IMAGE_SIZE * IMAGE_SIZE - SOURCE_SIZE * SOURCE_SIZE)
    values = np.arange(256, dtype=np.float64) / 255.0
    total = counts.sum()
    mean = float((counts * values).sum() / total)
    var = float((counts * (values - mean) ** 2).sum() / (total - 1))
    return mean, var**0.5


def load_mnist_bundle(
    name: str,
    root: str | os.PathLike[str] | None,
    *,
    val_size: int | None,
    train_size: int | None,
    split_seed: int,
    download: bool,
) -> DataBundle:
    """Load ``fashion-mnist`` or ``mnist`` from ``root`` (downloading first when asked and missing).

    ``root=None`` reads Fashion-MNIST from the Debian package's folder. The 60000 training
    images are split by a permutation seeded with ``split_seed``: the first ``val_size``
    (default 10000) are ``search_val``, the rest ``train``, and ``search_train`` is the first
    ``train_size`` (default min(20000, len(train))) of ``train``; ``test`` is the 10000-image
    t10k set.
    """
    layout = LAYOUTS[name]
    root_path = None if root is None else Path(root).expanduser()
    files = _find_files(layout, root_path)
    if files is None and download:
        if root_path is None:
            raise _not_found(layout, None, "--download needs a data root to write the files into")
        _download(layout, root_path)
        files = _find_files(layout, root_path)
    if files is None:
        raise _not_found(layout, root_path)

    train_grey, train_labels = read_image_label_files(files[TRAIN_IMAGES], files[TRAIN_LABELS])
    test_grey, test_labels = read_image_label_files(files[TEST_IMAGES], files[TEST_LABELS])

    # The three channels are copies of one grey channel, so one statistic serves all three.
    grey_mean, grey_std = padded_mean_std(train_grey)
    mean = (grey_mean, grey_mean, grey_mean)
    std = (grey_std, grey_std, grey_std)

    pool_size = int(train_labels.shape[0])
    val = DEFAULT_VAL_SIZE if val_size is None else val_size
    split = split_pool(
        np.arange(pool_size),
        val_size=val,
        train_size=train_size if train_size is not None else min(DEFAULT_TRAIN_SIZE, pool_size - val),
        seed=split_seed,
    )
    full_train = ImageTensorDataset(pad_to_rgb(train_grey), train_labels, mean, std, scale=255.0)
    return DataBundle(
        name=name,
        num_classes=NUM_CLASSES,
        image_size=IMAGE_SIZE,
        mean=mean,
        std=std,
        train=Subset(full_train, split.train),
        search_train=Subset(full_train, split.search_train),
        search_val=Subset(full_train, split.search_val),
        test=ImageTensorDataset(pad_to_rgb(test_grey), test_labels, mean, std, scale=255.0),
        hflip=layout.hflip,
        pad=PAD,
    )
