"""Datasets for haq-gym: digits (offline), CIFAR-10/100, (Fashion-)MNIST, image folders; HAQ's search splits.

Every split yields ``(normalised float32 [3,H,W], int label)``; training augmentation is
applied per batch with :meth:`DataBundle.augment`. Fashion-MNIST and MNIST are read from
their idx files (Fashion-MNIST offline from Debian's ``dataset-fashion-mnist`` package when
no data root is given) and zero-padded to 32x32.
"""

from haq_gym.data.bundle import DataBundle, materialize
from haq_gym.data.errors import DatasetNotFoundError
from haq_gym.data.registry import DATA_ROOT_HELP, dataset_names, load_dataset

__all__ = ["DATA_ROOT_HELP", "DataBundle", "DatasetNotFoundError", "dataset_names", "load_dataset", "materialize"]
