"""CIFAR-10 / CIFAR-100 from the standard "python version" files.

Design: torchvision is used to *download* the archives (its URLs and archive md5 via
``torchvision.datasets.utils.download_and_extract_archive``), but the extracted batch
files are read by the small reader below instead of ``torchvision.datasets.CIFAR10``.
torchvision's class refuses any file whose md5 differs from the official one, which
makes generated test fixtures impossible to load without patching its checksum lists;
reading the pickles ourselves lets tests exercise this exact code path. The reader checks
structure instead (keys, uint8 [N, 3072] data, label count and range), so a truncated or
foreign file still fails loudly. Images stay uint8 in memory; items are produced as
``Normalize(mean, std)(ToTensor()(img))`` would produce them.
"""

from __future__ import annotations

import os
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Subset

from haq_gym.data.bundle import DataBundle
from haq_gym.data.errors import DatasetNotFoundError
from haq_gym.data.splits import split_pool
from haq_gym.data.tensor_dataset import ImageTensorDataset

IMAGE_SIZE = 32
PAD = 4
# HAQ's search split: 10k held-out reward images, 20k images for calibration/finetune.
DEFAULT_VAL_SIZE = 10_000
DEFAULT_TRAIN_SIZE = 20_000


@dataclass(frozen=True)
class CifarLayout:
    """Where one CIFAR variant's files live and how its labels are keyed."""

    name: str
    title: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: str
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    torchvision_class: str


LAYOUTS: dict[str, CifarLayout] = {
    "cifar10": CifarLayout(
        name="cifar10",
        title="CIFAR-10",
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        label_key="labels",
        num_classes=10,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        torchvision_class="CIFAR10",
    ),
    "cifar100": CifarLayout(
        name="cifar100",
        title="CIFAR-100",
        folder="cifar-100-python",
        train_files=("train",),
        test_files=("test",),
        label_key="fine_labels",
        num_classes=100,
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
        torchvision_class="CIFAR100",
    ),
}


def _missing_files(layout: CifarLayout, root: Path) -> list[Path]:
    folder = root / layout.folder
    return [folder / f for f in layout.train_files + layout.test_files if not (folder / f).is_file()]


def _not_found(layout: CifarLayout, root: Path | None, detail: str) -> DatasetNotFoundError:
    where = "no data root was given" if root is None else f"looked in {root / layout.folder}"
    return DatasetNotFoundError(
        f"{layout.title} not found ({where}; {detail}). Pass --data-root DIR pointing at a folder "
        f"that contains {layout.folder}/, or pass download=True (env keyword download=true) "
        "on a machine with internet access."
    )


def _download(layout: CifarLayout, root: Path) -> None:
    """Fetch and extract the official archive with torchvision (which checks its md5)."""
    from haq_gym.compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    from torchvision import datasets
    from torchvision.datasets.utils import download_and_extract_archive

    source = getattr(datasets, layout.torchvision_class)
    try:
        download_and_extract_archive(source.url, str(root), filename=source.filename, md5=source.tgz_md5)
    except (OSError, RuntimeError, tarfile.TarError) as error:
        raise _not_found(layout, root, f"download failed: {error}") from error


# What the official batch files and numpy arrays pickled from Python 3 (protocols 2-5) need:
# array reconstruction, and _codecs.encode, which protocol 2 uses to rebuild bytes. Nothing else.
_ALLOWED_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }
)


class _BatchUnpickler(pickle.Unpickler):
    """Rebuilds only plain containers, strings, bytes, numbers and numpy arrays.

    A batch file is a pickle, and a pickle can name any callable; a crafted file in a
    shared or downloaded data root would otherwise run code when the data loads.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: a CIFAR batch holds only a dict of arrays, lists, strings and numbers"
        )


def read_batches(paths: list[Path], label_key: str, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Read CIFAR pickles into (uint8 images [N,3,32,32], int64 labels [N]), in file order.

    Accepts both the official Python-2 pickles (str keys once loaded with latin1) and
    files written from Python 3 with bytes keys.
    """
    images: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    for path in paths:
        with open(path, "rb") as handle:
            try:
                entry = _BatchUnpickler(handle, encoding="latin1").load()
            except (pickle.UnpicklingError, EOFError, ValueError) as err:
                raise ValueError(f"{path}: not a CIFAR batch file ({err})") from None
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: expected a pickled dict, got {type(entry).__name__}")
        entry = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}
        if "data" not in entry or label_key not in entry:
            raise ValueError(f"{path}: expected keys 'data' and {label_key!r}, found {sorted(entry)}")
        data = np.asarray(entry["data"])
        batch_labels = np.asarray(entry[label_key], dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * IMAGE_SIZE * IMAGE_SIZE:
            raise ValueError(f"{path}: expected uint8 data of shape [N, 3072], got {data.dtype} {data.shape}")
        if batch_labels.shape != (data.shape[0],):
            raise ValueError(f"{path}: {data.shape[0]} images but {batch_labels.shape[0]} labels")
        if batch_labels.size and (batch_labels.min() < 0 or batch_labels.max() >= num_classes):
            raise ValueError(
                f"{path}: labels must lie in [0, {num_classes}), got {batch_labels.min()}..{batch_labels.max()}"
            )
        images.append(data.reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE))
        labels.append(batch_labels)
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


def load_cifar_bundle(
    name: str,
    root: str | os.PathLike[str] | None,
    *,
    val_size: int | None,
    train_size: int | None,
    split_seed: int,
    download: bool,
) -> DataBundle:
    """Load ``cifar10`` or ``cifar100`` from ``root`` (downloading first when asked and missing).

    The training images are split by a permutation seeded with ``split_seed``: the first
    ``val_size`` (default 10000) are ``search_val``, the rest ``train``, and
    ``search_train`` is the first ``train_size`` (default min(20000, len(train))) of ``train``.
    """
    layout = LAYOUTS[name]
    if root is None:
        raise _not_found(layout, None, "the files must be on disk")
    root_path = Path(root).expanduser()
    missing = _missing_files(layout, root_path)
    if missing and download:
        _download(layout, root_path)
        missing = _missing_files(layout, root_path)
    if missing:
        raise _not_found(layout, root_path, "missing " + ", ".join(p.name for p in missing))

    folder = root_path / layout.folder
    train_images, train_labels = read_batches(
        [folder / f for f in layout.train_files], layout.label_key, layout.num_classes
    )
    test_images, test_labels = read_batches(
        [folder / f for f in layout.test_files], layout.label_key, layout.num_classes
    )

    pool_size = int(train_labels.shape[0])
    val = DEFAULT_VAL_SIZE if val_size is None else val_size
    split = split_pool(
        np.arange(pool_size),
        val_size=val,
        train_size=train_size if train_size is not None else min(DEFAULT_TRAIN_SIZE, pool_size - val),
        seed=split_seed,
    )
    full_train = ImageTensorDataset(train_images, train_labels, layout.mean, layout.std, scale=255.0)
    return DataBundle(
        name=name,
        num_classes=layout.num_classes,
        image_size=IMAGE_SIZE,
        mean=layout.mean,
        std=layout.std,
        train=Subset(full_train, split.train),
        search_train=Subset(full_train, split.search_train),
        search_val=Subset(full_train, split.search_val),
        test=ImageTensorDataset(test_images, test_labels, layout.mean, layout.std, scale=255.0),
        hflip=True,
        pad=PAD,
    )
