"""CIFAR-10/100 loading from generated files in the official on-disk format."""

from __future__ import annotations

import pickle
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from haq_gym.compat import ensure_torchvision_importable
from haq_gym.data import DataBundle, DatasetNotFoundError, load_dataset, materialize

PER_BATCH = 6
TEST_COUNT = 5


def fake_images(count: int, offset: int) -> np.ndarray:
    """uint8 [count, 3072] rows (R plane, G plane, B plane) whose first pixel encodes their position."""
    rng = np.random.default_rng(offset)
    data = rng.integers(0, 256, size=(count, 3072), dtype=np.uint8)
    data[:, 0] = np.arange(offset, offset + count, dtype=np.uint8)
    return data


def write_pickle(path: Path, payload: dict) -> None:
    with open(path, "wb") as handle:
        pickle.dump(payload, handle)


def make_cifar10(root: Path) -> tuple[np.ndarray, list[int], np.ndarray, list[int]]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train_data, train_labels = [], []
    for batch in range(5):
        data = fake_images(PER_BATCH, batch * PER_BATCH)
        labels = [(batch * PER_BATCH + i) % 10 for i in range(PER_BATCH)]
        write_pickle(folder / f"data_batch_{batch + 1}", {b"batch_label": b"fake", b"labels": labels, b"data": data})
        train_data.append(data)
        train_labels += labels
    test_data = fake_images(TEST_COUNT, 200)
    test_data[0, 0], test_data[0, 1024 + 33], test_data[0, 2048 + 1023] = 255, 0, 128  # R(0,0), G(1,1), B(31,31)
    test_labels = [9, 8, 7, 6, 5]
    write_pickle(folder / "test_batch", {b"labels": test_labels, b"data": test_data})
    write_pickle(folder / "batches.meta", {b"label_names": [f"class{i}".encode() for i in range(10)]})
    return np.concatenate(train_data), train_labels, test_data, test_labels


def make_cifar100(root: Path) -> None:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    train_labels = [i * 2 for i in range(40)]
    train = {b"fine_labels": train_labels, b"coarse_labels": [0] * 40, b"data": fake_images(40, 0)}
    write_pickle(folder / "train", train)
    test = fake_images(3, 100)
    write_pickle(folder / "test", {b"fine_labels": [99, 0, 50], b"coarse_labels": [0] * 3, b"data": test})
    write_pickle(folder / "meta", {b"fine_label_names": [f"c{i}".encode() for i in range(100)]})


@pytest.fixture
def cifar10(tmp_path: Path) -> tuple[DataBundle, np.ndarray, list[int], np.ndarray, list[int]]:
    generated = make_cifar10(tmp_path)
    return (load_dataset("cifar10", tmp_path, val_size=8, train_size=12, split_seed=3), *generated)


def test_cifar10_counts_and_splits(cifar10: tuple) -> None:
    bundle = cifar10[0]
    assert (bundle.name, bundle.num_classes, bundle.image_size, bundle.hflip) == ("cifar10", 10, 32, True)
    assert (len(bundle.train), len(bundle.search_train), len(bundle.search_val), len(bundle.test)) == (22, 12, 8, 5)
    train, val = set(bundle.train.indices), set(bundle.search_val.indices)
    assert not train & val and train | val == set(range(5 * PER_BATCH))
    assert bundle.search_train.indices == bundle.train.indices[:12]


def test_cifar10_labels_and_pixels_round_trip(cifar10: tuple) -> None:
    bundle, train_data, train_labels, _, test_labels = cifar10
    images, labels = materialize(bundle.test)
    assert images.shape == (5, 3, 32, 32) and labels.tolist() == test_labels
    mean, std = bundle.mean, bundle.std
    assert images[0, 0, 0, 0].item() == pytest.approx((1.0 - mean[0]) / std[0], abs=1e-6)
    assert images[0, 1, 1, 1].item() == pytest.approx((0.0 - mean[1]) / std[1], abs=1e-6)
    assert images[0, 2, 31, 31].item() == pytest.approx((128 / 255 - mean[2]) / std[2], abs=1e-6)

    val_images, val_labels = materialize(bundle.search_val)
    mean_t, std_t = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
    for position, index in enumerate(bundle.search_val.indices):
        assert val_labels[position].item() == train_labels[index]
        expected = (torch.from_numpy(train_data[index]).view(3, 32, 32).float() / 255 - mean_t) / std_t
        assert torch.allclose(val_images[position], expected, atol=1e-6)


def test_cifar10_matches_torchvision_transform(cifar10: tuple) -> None:
    """Items equal torchvision's ToTensor + Normalize applied to the same HWC image."""
    ensure_torchvision_importable()
    from PIL import Image
    from torchvision import transforms

    bundle, _, _, test_data, _ = cifar10
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(bundle.mean, bundle.std)])
    hwc = test_data[2].reshape(3, 32, 32).transpose(1, 2, 0)
    assert torch.allclose(bundle.test[2][0], transform(Image.fromarray(hwc)), atol=1e-6)


def test_cifar10_split_seed_controls_split(tmp_path: Path) -> None:
    make_cifar10(tmp_path)
    first = load_dataset("cifar10", tmp_path, val_size=8, split_seed=0)
    same = load_dataset("cifar10", tmp_path, val_size=8, split_seed=0)
    other = load_dataset("cifar10", tmp_path, val_size=8, split_seed=1)
    assert first.search_val.indices == same.search_val.indices
    assert set(first.search_val.indices) != set(other.search_val.indices)
    assert len(first.search_train) == 22  # default train_size: min(20000, remaining)


def test_cifar100_fine_labels(tmp_path: Path) -> None:
    make_cifar100(tmp_path)
    bundle = load_dataset("cifar100", str(tmp_path), val_size=10)
    assert bundle.num_classes == 100
    assert (len(bundle.train), len(bundle.search_val), len(bundle.test)) == (30, 10, 3)
    _, labels = materialize(bundle.test)
    assert labels.tolist() == [99, 0, 50]
    _, train_labels = materialize(bundle.train)
    assert train_labels.tolist() == [2 * i for i in bundle.train.indices]


def test_default_val_size_does_not_fit_tiny_pool(tmp_path: Path) -> None:
    make_cifar10(tmp_path)
    with pytest.raises(ValueError, match=r"val_size=10000 .* 30 images"):
        load_dataset("cifar10", tmp_path)


@pytest.mark.parametrize("name, folder", [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python")])
def test_missing_files_offline_message(tmp_path: Path, name: str, folder: str) -> None:
    with pytest.raises(FileNotFoundError) as info:
        load_dataset(name, tmp_path)
    message = str(info.value)
    assert isinstance(info.value, DatasetNotFoundError)
    assert "--data-root" in message and "download=True" in message
    assert str(tmp_path / folder) in message and folder in message


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="--data-root"):
        load_dataset("cifar10")


def test_failed_download_reports_missing_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ensure_torchvision_importable()
    import torchvision.datasets.utils as tv_utils

    calls = []

    def offline(url: str, *args: object, **kwargs: object) -> None:
        calls.append(url)
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", offline)
    with pytest.raises(DatasetNotFoundError, match=r"download failed.*--data-root"):
        load_dataset("cifar10", tmp_path, download=True)
    assert calls == ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]


def test_download_skipped_when_files_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ensure_torchvision_importable()
    import torchvision.datasets.utils as tv_utils

    make_cifar10(tmp_path)
    monkeypatch.setattr(tv_utils, "download_and_extract_archive", lambda *a, **k: pytest.fail("downloaded"))
    assert len(load_dataset("cifar10", tmp_path, val_size=8, download=True).test) == TEST_COUNT


def test_malformed_batch_is_rejected(tmp_path: Path) -> None:
    make_cifar10(tmp_path)
    bad = {b"labels": [0], b"data": np.zeros((1, 100), np.uint8)}
    write_pickle(tmp_path / "cifar-10-batches-py" / "data_batch_2", bad)
    with pytest.raises(ValueError, match=r"data_batch_2.*3072"):
        load_dataset("cifar10", tmp_path, val_size=8)


class _RunsCode:
    """Unpickling this with plain pickle.load would write ``marker``: the attack a data root could carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def test_batch_file_that_would_run_code_is_refused(tmp_path: Path) -> None:
    make_cifar10(tmp_path / "data")
    marker = tmp_path / "marker.txt"
    data = fake_images(PER_BATCH, 0)
    write_pickle(
        tmp_path / "data" / "cifar-10-batches-py" / "data_batch_1",
        {b"labels": [0] * PER_BATCH, b"data": data, b"payload": _RunsCode(marker)},
    )
    with pytest.raises(ValueError, match=r"data_batch_1: not a CIFAR batch file .*refusing to load"):
        load_dataset("cifar10", tmp_path / "data", val_size=8)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_batches_pickled_with_old_and_new_protocols_load(tmp_path: Path, protocol: int) -> None:
    make_cifar10(tmp_path)
    data = fake_images(PER_BATCH, 0)
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "wb") as handle:
        pickle.dump(
            {"batch_label": "x", "labels": [3] * PER_BATCH, "data": data, "filenames": ["a"] * PER_BATCH},
            handle,
            protocol=protocol,
        )
    bundle = load_dataset("cifar10", tmp_path, val_size=8)
    assert len(bundle.train) + len(bundle.search_val) == 5 * PER_BATCH
