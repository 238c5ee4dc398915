"""Write a small ImageNet-style ``train/<class>/*.jpg`` + ``val/<class>/*.jpg`` tree of random images.

For tests and speed measurements where no real image folder exists (nothing can be
downloaded): the images are seeded noise, so accuracies mean nothing, but decoding,
resizing, cropping, batching and the model's cost at the given size are those of real data.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm


def write_image_tree(
    root: str | os.PathLike[str],
    *,
    classes: int = 10,
    train_per_class: int = 10,
    val_per_class: int = 2,
    size: tuple[int, int] = (256, 320),
    seed: int = 0,
    progress: bool = False,
) -> Path:
    """Write JPEGs of ``size`` (height, width) pixels under ``root`` (which must not hold a tree); returns ``root``."""
    root = Path(root)
    if (root / "train").exists() or (root / "val").exists():
        raise FileExistsError(f"{root} already holds an image tree; pick an empty folder")
    rng = np.random.default_rng(seed)
    total = classes * (train_per_class + val_per_class)
    with tqdm(total=total, desc="writing images", unit="img", disable=not progress) as bar:
        for split, count in (("train", train_per_class), ("val", val_per_class)):
            for c in range(classes):
                folder = root / split / f"class{c:03d}"
                folder.mkdir(parents=True, exist_ok=True)
                for i in range(count):
                    pixels = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
                    Image.fromarray(pixels).save(folder / f"{i:05d}.jpg", quality=90)
                    bar.update(1)
    return root
