"""scikit-learn's bundled handwritten digits as a small, offline 32x32 RGB dataset.

``sklearn.datasets.load_digits`` ships 1797 real 8x8 grey images (values 0..16, 10
classes) inside the package, so this dataset works without a data root or a network.
The images are scaled to [0, 1], upsampled to 32x32 (bilinear, align_corners=False) so
CIFAR-style networks apply unchanged, and repeated to three channels.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Subset

from haq_gym.data.bundle import DataBundle
from haq_gym.data.splits import split_pool
from haq_gym.data.tensor_dataset import ImageTensorDataset

IMAGE_SIZE = 32
TEST_FRACTION = 0.2
DEFAULT_VAL_SIZE = 360
# Strokes reach the top and bottom rows of the 8x8 frame in about half of the images;
# shifting by up to 2 output pixels (half a source pixel) keeps them mostly in view.
PAD = 2


def load_digits_bundle(*, val_size: int | None, train_size: int | None, split_seed: int) -> DataBundle:
    """Build the digits bundle with splits seeded by ``split_seed``.

    Test is a stratified 20% (360 images); of the remaining 1437, ``val_size`` (default
    360) become ``search_val`` and the rest (1077) ``train``. Mean/std are computed on
    that 1437-image training pool (test excluded), so they depend only on ``split_seed``.
    """
    # Imported here: scikit-learn takes seconds to import and only this loader needs it.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    raw = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    images = F.interpolate(raw, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    images = images.expand(-1, 3, -1, -1).contiguous()
    labels = torch.from_numpy(digits.target.astype(np.int64))

    count = int(labels.shape[0])
    pool_idx, test_idx = train_test_split(
        np.arange(count),
        test_size=math.ceil(TEST_FRACTION * count),
        stratify=digits.target,
        random_state=split_seed,
    )
    split = split_pool(
        pool_idx,
        val_size=DEFAULT_VAL_SIZE if val_size is None else val_size,
        train_size=train_size,
        seed=split_seed,
    )

    # The three channels are copies of one grey channel, so one statistic serves all three.
    pool_pixels = images[torch.from_numpy(pool_idx), 0].to(torch.float64)
    grey_mean, grey_std = float(pool_pixels.mean()), float(pool_pixels.std())
    mean = (grey_mean, grey_mean, grey_mean)
    std = (grey_std, grey_std, grey_std)
    full = ImageTensorDataset(images, labels, mean, std, scale=1.0)
    return DataBundle(
        name="digits",
        num_classes=10,
        image_size=IMAGE_SIZE,
        mean=mean,
        std=std,
        train=Subset(full, split.train),
        search_train=Subset(full, split.search_train),
        search_val=Subset(full, split.search_val),
        test=Subset(full, test_idx.tolist()),
        hflip=False,
        pad=PAD,
    )
