"""Fashion-MNIST / MNIST loading from generated idx files (and the Debian package's files when installed)."""

from __future__ import annotations

import dataclasses
import gzip
import io
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch

from haq_gym.compat import ensure_torchvision_importable
from haq_gym.data import DataBundle, DatasetNotFoundError, dataset_names, load_dataset, materialize, mnist
from haq_gym.data.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx

TRAIN_COUNT = 30
TEST_COUNT = 10
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """An idx file of ``array`` (uint8); ``magic`` overrides the header's magic number."""
    if magic is None:
        magic = 0x0800 | array.ndim
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def gzip_bytes(data: bytes, stored_name: str = "some-other-name.bin") -> bytes:
    """gzip ``data`` with a header naming a different file (as Debian's rewritten headers do)."""
    buffer = io.BytesIO()
    with gzip.GzipFile(filename=stored_name, mode="wb", fileobj=buffer, mtime=0) as handle:
        handle.write(data)
    return buffer.getvalue()


def fake_split(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
    images[:, 0, 0] = np.arange(count)  # each image's first pixel is its position
    return images, (np.arange(count) % 10).astype(np.uint8)


def write_files(folder: Path, gz: bool, contents: dict[str, bytes] | None = None) -> dict[str, np.ndarray]:
    """Write the four idx files into ``folder`` (``NAME.gz`` when ``gz``); ``contents`` replaces some."""
    train_images, train_labels = fake_split(TRAIN_COUNT, 1)
    test_images, test_labels = fake_split(TEST_COUNT, 2)
    arrays = dict(zip(FILES, (train_images, train_labels, test_images, test_labels), strict=True))
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        data = (contents or {}).get(name, idx_bytes(array))
        (folder / (name + ".gz" if gz else name)).write_bytes(gzip_bytes(data) if gz else data)
    return arrays


def normalised(grey: np.ndarray, bundle: DataBundle) -> torch.Tensor:
    """What an item should be: the 28x28 image zero-padded to 32x32, three channels, normalised."""
    padded = torch.zeros(3, 32, 32)
    padded[:, 2:30, 2:30] = torch.from_numpy(grey).float() / 255
    return (padded - torch.tensor(bundle.mean).view(3, 1, 1)) / torch.tensor(bundle.std).view(3, 1, 1)


@pytest.fixture
def flat_gz(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    return tmp_path, write_files(tmp_path, gz=True)


def test_names_registered() -> None:
    assert {"fashion-mnist", "mnist"} <= set(dataset_names())


def test_flat_gzip_items_labels_and_padding(flat_gz: tuple) -> None:
    root, arrays = flat_gz
    bundle = load_dataset("fashion-mnist", root, val_size=8, train_size=12, split_seed=3)
    assert (bundle.name, bundle.num_classes, bundle.image_size, bundle.hflip, bundle.pad) == (
        "fashion-mnist",
        10,
        32,
        True,
        2,
    )
    assert (len(bundle.train), len(bundle.search_train), len(bundle.search_val), len(bundle.test)) == (22, 12, 8, 10)

    images, labels = materialize(bundle.test)
    assert images.shape == (TEST_COUNT, 3, 32, 32) and images.dtype == torch.float32
    assert labels.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    black = -bundle.mean[0] / bundle.std[0]
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert torch.allclose(images[:, :, border], torch.full_like(images[:, :, border], black))
    for index in range(TEST_COUNT):
        assert torch.allclose(images[index], normalised(arrays["t10k-images-idx3-ubyte"][index], bundle), atol=1e-6)

    val_images, val_labels = materialize(bundle.search_val)
    for position, index in enumerate(bundle.search_val.indices):
        assert val_labels[position].item() == index % 10
        assert torch.allclose(
            val_images[position], normalised(arrays["train-images-idx3-ubyte"][index], bundle), atol=1e-6
        )


def test_mean_std_from_padded_training_pool(flat_gz: tuple) -> None:
    root, arrays = flat_gz
    bundle = load_dataset("fashion-mnist", root, val_size=8)
    padded = torch.zeros(TRAIN_COUNT, 32, 32, dtype=torch.float64)
    padded[:, 2:30, 2:30] = torch.from_numpy(arrays["train-images-idx3-ubyte"]).double() / 255
    assert bundle.mean == pytest.approx((padded.mean().item(),) * 3, rel=1e-12)
    assert bundle.std == pytest.approx((padded.std().item(),) * 3, rel=1e-12)


@pytest.mark.parametrize("name, hflip, folder", [("fashion-mnist", True, "FashionMNIST"), ("mnist", False, "MNIST")])
@pytest.mark.parametrize("gz", [True, False])
def test_torchvision_layout(tmp_path: Path, name: str, hflip: bool, folder: str, gz: bool) -> None:
    arrays = write_files(tmp_path / folder / "raw", gz=gz)
    bundle = load_dataset(name, tmp_path, val_size=5)
    assert (bundle.name, bundle.hflip, bundle.pad) == (name, hflip, 2)
    assert (len(bundle.train), len(bundle.search_train), len(bundle.search_val), len(bundle.test)) == (25, 25, 5, 10)
    assert torch.allclose(bundle.test[4][0], normalised(arrays["t10k-images-idx3-ubyte"][4], bundle), atol=1e-6)


def test_compression_detected_from_content_not_name(tmp_path: Path) -> None:
    """A gzip stream named NAME and an uncompressed file named NAME.gz both read correctly."""
    arrays = write_files(tmp_path, gz=False)
    for name in FILES[:2]:
        (tmp_path / name).write_bytes(gzip_bytes((tmp_path / name).read_bytes(), stored_name="x.gz"))
    for name in FILES[2:]:
        (tmp_path / name).rename(tmp_path / f"{name}.gz")
    bundle = load_dataset("mnist", tmp_path, val_size=5)
    assert bundle.train.dataset.labels.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert materialize(bundle.test)[1].tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()


def test_split_disjoint_and_seeded(flat_gz: tuple) -> None:
    root, _ = flat_gz
    first = load_dataset("fashion-mnist", root, val_size=8, split_seed=0)
    same = load_dataset("fashion-mnist", root, val_size=8, split_seed=0)
    other = load_dataset("fashion-mnist", root, val_size=8, split_seed=1)
    train, val = set(first.train.indices), set(first.search_val.indices)
    assert not train & val and train | val == set(range(TRAIN_COUNT))
    assert first.search_train.indices == first.train.indices  # default train_size: min(20000, remaining)
    assert (first.search_val.indices, first.train.indices) == (same.search_val.indices, same.train.indices)
    assert set(first.search_val.indices) != set(other.search_val.indices)


@pytest.mark.parametrize("val_size", [None, TRAIN_COUNT, TRAIN_COUNT + 5])
def test_val_size_must_fit_pool(flat_gz: tuple, val_size: int | None) -> None:
    expected = 10_000 if val_size is None else val_size
    with pytest.raises(ValueError, match=f"val_size={expected} .* {TRAIN_COUNT} images"):
        load_dataset("fashion-mnist", flat_gz[0], val_size=val_size)


def test_image_size_other_than_32_rejected(flat_gz: tuple) -> None:
    assert load_dataset("mnist", flat_gz[0], val_size=5, image_size=32).image_size == 32
    with pytest.raises(ValueError, match="mnist images are 32x32; image_size=28"):
        load_dataset("mnist", flat_gz[0], image_size=28)


@pytest.mark.parametrize("name", ["fashion-mnist", "mnist"])
def test_missing_files_message(tmp_path: Path, name: str) -> None:
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"")  # three of four is still missing
    with pytest.raises(FileNotFoundError) as info:
        load_dataset(name, tmp_path)
    message = str(info.value)
    assert isinstance(info.value, DatasetNotFoundError)
    assert all(f in message for f in FILES)
    assert str(tmp_path) in message and str(tmp_path / mnist.LAYOUTS[name].torchvision_class / "raw") in message
    assert "--data-root DIR" in message and "download=True" in message
    has_apt = "apt-get install dataset-fashion-mnist" in message and "/usr/share/datasets/fashion-mnist" in message
    assert has_apt == (name == "fashion-mnist")


def test_no_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"no data root was given.*--data-root"):
        load_dataset("mnist")
    layout = mnist.LAYOUTS["fashion-mnist"]
    monkeypatch.setitem(mnist.LAYOUTS, "fashion-mnist", dataclasses.replace(layout, default_folder=tmp_path))
    with pytest.raises(DatasetNotFoundError, match=f"looked in {tmp_path}\\).*apt-get install dataset-fashion"):
        load_dataset("fashion-mnist")
    with pytest.raises(DatasetNotFoundError, match="needs a data root"):
        load_dataset("fashion-mnist", download=True)
    write_files(tmp_path, gz=True)
    assert len(load_dataset("fashion-mnist", val_size=5).test) == TEST_COUNT


def header_magic(name: str) -> int:
    return IMAGES_MAGIC if "images" in name else LABELS_MAGIC


def truncated_gzip(name: str) -> bytes:
    return gzip_bytes(idx_bytes(fake_split(TRAIN_COUNT, 1)[0 if "images" in name else 1]))[:-30]


def bad_crc_gzip(name: str) -> bytes:
    data = bytearray(gzip_bytes(idx_bytes(fake_split(TRAIN_COUNT, 1)[0 if "images" in name else 1])))
    data[-6] ^= 0xFF
    return bytes(data)


def with_payload(name: str, change: int) -> bytes:
    data = idx_bytes(fake_split(TRAIN_COUNT, 1)[0 if "images" in name else 1])
    return data + b"\x00" * change if change > 0 else data[:change]


BAD_FILES = [
    (
        "train-images-idx3-ubyte",
        lambda n: b"\x12\x34" + idx_bytes(fake_split(30, 1)[0])[2:],
        r"not an idx file: expected magic 0x00000803 .* found 0x12340803",
    ),
    (
        "train-labels-idx1-ubyte",
        lambda n: idx_bytes(fake_split(30, 1)[1], magic=0x0D01),
        r"expected dtype code 0x08 \(unsigned byte, magic 0x00000801\), found 0x0d \(float32\)",
    ),
    (
        "train-labels-idx1-ubyte",
        lambda n: idx_bytes(fake_split(30, 1)[0]),
        r"expected 1 dimension\(s\) \(magic 0x00000801\), found 3 \(magic 0x00000803\)",
    ),
    (
        "t10k-images-idx3-ubyte",
        lambda n: b"\x00\x00\x08\x03\x00\x00",
        r"header truncated: expected 16 bytes .* found 6",
    ),
    (
        "train-images-idx3-ubyte",
        lambda n: with_payload(n, -1),
        r"payload truncated: dimensions 30x28x28 need exactly 23520 bytes .* found 23519",
    ),
    (
        "t10k-labels-idx1-ubyte",
        lambda n: idx_bytes(fake_split(10, 2)[1]) + b"\x01",
        r"payload trailing bytes: dimensions 10 need exactly 10 bytes after the 8-byte header, found 11",
    ),
    ("train-images-idx3-ubyte", truncated_gzip, r"not a complete gzip stream"),
    ("train-labels-idx1-ubyte", bad_crc_gzip, r"not a complete gzip stream"),
]


@pytest.mark.parametrize(
    "bad_name, make_bad, message",
    BAD_FILES,
    ids=["magic", "dtype", "ndim", "header", "truncated", "trailing", "gzip-truncated", "gzip-crc"],
)
def test_malformed_idx_file_is_rejected(tmp_path: Path, bad_name: str, make_bad, message: str) -> None:
    write_files(tmp_path, gz=False, contents={bad_name: make_bad(bad_name)})
    with pytest.raises(ValueError, match=message) as info:
        load_dataset("fashion-mnist", tmp_path, val_size=5)
    assert str(tmp_path / bad_name) in str(info.value)


def test_count_mismatch_names_both_files(tmp_path: Path) -> None:
    write_files(tmp_path, gz=True, contents={"t10k-labels-idx1-ubyte": idx_bytes(np.zeros(9, np.uint8))})
    labels, images = tmp_path / "t10k-labels-idx1-ubyte.gz", tmp_path / "t10k-images-idx3-ubyte.gz"
    with pytest.raises(ValueError, match=f"{labels} holds 9 labels but {images} holds 10 images"):
        load_dataset("mnist", tmp_path, val_size=5)


def test_label_out_of_range(tmp_path: Path) -> None:
    labels = (np.arange(TRAIN_COUNT) % 10).astype(np.uint8)
    labels[7] = 10
    write_files(tmp_path, gz=False, contents={"train-labels-idx1-ubyte": idx_bytes(labels)})
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte: labels must lie in 0\.\.9, found 0\.\.10"):
        load_dataset("mnist", tmp_path, val_size=5)


def test_images_must_be_28x28(tmp_path: Path) -> None:
    write_files(tmp_path, gz=True, contents={"t10k-images-idx3-ubyte": idx_bytes(np.zeros((10, 32, 30), np.uint8))})
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.gz: expected 28x28 images, found 32x30"):
        load_dataset("fashion-mnist", tmp_path, val_size=5)


def test_read_idx_plain_file(tmp_path: Path) -> None:
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "x").write_bytes(idx_bytes(array))
    result = read_idx(tmp_path / "x", IMAGES_MAGIC)
    assert result.dtype == np.uint8 and result.flags.writeable and np.array_equal(result, array)


class FakeTorchvisionSource:
    """Stands in for torchvision.datasets.FashionMNIST/MNIST: writes the raw files as its download would."""

    calls: ClassVar[list[tuple[str, bool, bool]]] = []
    folder = "FashionMNIST"

    def __init__(self, root: str, train: bool = True, download: bool = False) -> None:
        type(self).calls.append((root, train, download))
        write_files(Path(root) / self.folder / "raw", gz=False)


@pytest.fixture
def torchvision_datasets():
    ensure_torchvision_importable()
    import torchvision.datasets

    FakeTorchvisionSource.calls = []
    return torchvision.datasets


def test_download_then_read_raw_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, torchvision_datasets) -> None:
    monkeypatch.setattr(torchvision_datasets, "FashionMNIST", FakeTorchvisionSource)
    bundle = load_dataset("fashion-mnist", tmp_path, val_size=5, download=True)
    assert FakeTorchvisionSource.calls == [(str(tmp_path), True, True), (str(tmp_path), False, True)]
    assert len(bundle.test) == TEST_COUNT and (tmp_path / "FashionMNIST" / "raw" / FILES[0]).is_file()


def test_failed_download_reports_missing_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, torchvision_datasets
) -> None:
    def offline(root: str, train: bool = True, download: bool = False) -> None:
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(torchvision_datasets, "MNIST", offline)
    with pytest.raises(DatasetNotFoundError, match=r"download failed: Error downloading.*--data-root"):
        load_dataset("mnist", tmp_path, download=True)


def test_download_skipped_when_files_present(
    flat_gz: tuple, monkeypatch: pytest.MonkeyPatch, torchvision_datasets
) -> None:
    monkeypatch.setattr(torchvision_datasets, "FashionMNIST", lambda *a, **k: pytest.fail("downloaded"))
    assert len(load_dataset("fashion-mnist", flat_gz[0], val_size=5, download=True).test) == TEST_COUNT


@pytest.mark.skipif(
    not all((mnist.DEBIAN_FASHION_MNIST_DIR / f"{f}.gz").is_file() for f in FILES),
    reason="Debian's dataset-fashion-mnist is not installed",
)
def test_debian_fashion_mnist() -> None:
    start = time.perf_counter()
    bundle = load_dataset("fashion-mnist")
    seconds = time.perf_counter() - start
    print(
        f"\nFashion-MNIST from {mnist.DEBIAN_FASHION_MNIST_DIR}: loaded in {seconds:.2f} s; "
        f"mean {bundle.mean[0]:.4f}, std {bundle.std[0]:.4f} (each channel)"
    )
    assert (len(bundle.train), len(bundle.search_train), len(bundle.search_val), len(bundle.test)) == (
        50_000,
        20_000,
        10_000,
        10_000,
    )
    pool_labels = bundle.train.dataset.labels
    assert pool_labels.shape == (60_000,)
    assert pool_labels[:5].tolist() == [9, 0, 0, 3, 0] and bundle.test.labels[:5].tolist() == [9, 2, 1, 1, 6]
    assert np.all(np.abs(np.bincount(pool_labels.numpy(), minlength=10) - 6000) <= 300)
    assert np.bincount(bundle.test.labels.numpy(), minlength=10).min() >= 900
    # Padded 28x28 images: mean ~0.286 * 784/1024 (Fashion-MNIST's published 28x28 mean is 0.2860).
    assert bundle.mean[0] == pytest.approx(0.2860 * 784 / 1024, abs=2e-3) and 0.3 < bundle.std[0] < 0.4
    image, label = bundle.test[0]
    assert image.shape == (3, 32, 32) and 0 <= label < 10
    assert torch.allclose(image[:, :2, :], torch.full((3, 2, 32), -bundle.mean[0] / bundle.std[0]))
