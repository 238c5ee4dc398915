"""Datasets for haq-gym: digits (offline), CIFAR-10/100 and image folders, with HAQ's search splits.

Every split yields ``(normalised float32 [3,H,W], int label)``; training augmentation is
applied per batch with :meth:`DataBundle.augment`.
"""

from haq_gym.data.bundle import DataBundle, materialize
from haq_gym.data.errors import DatasetNotFoundError
from haq_gym.data.registry import dataset_names, load_dataset

__all__ = ["DataBundle", "DatasetNotFoundError", "dataset_names", "load_dataset", "materialize"]
