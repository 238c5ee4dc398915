"""Bring your own model and data: torchvision and import-path networks, an image folder, HAQ strategy lists.

Everything is random-init and small (a generated image tree of a dozen images at 64 px, or
digits at 32 px) so that the whole file runs in seconds; no weights are downloaded.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from PIL import Image

from haq_gym.data import load_dataset
from haq_gym.export.source import source_from_policy
from haq_gym.finetune.command import main as finetune_main
from haq_gym.finetune.command import read_policy_argument
from haq_gym.models import save_checkpoint
from haq_gym.models.inspection import UnsupportedModelError, check_quantizable
from haq_gym.models.spec import ModelSpec, ModelSpecError
from haq_gym.policy import PolicyFile
from haq_gym.quantized_model import QuantizedModel, check_policy

SIZE = 64


@pytest.fixture(scope="module")
def image_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two classes, 8 training and 2 validation images each, of mixed sizes (an ImageNet-style layout)."""
    root = tmp_path_factory.mktemp("tree")
    rng = np.random.default_rng(0)
    for split, count in (("train", 8), ("val", 2)):
        for name in ("ant", "bee"):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, size=(60 + 7 * i, 80, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.jpg")
    return root


@pytest.fixture(scope="module")
def tv_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    torch.manual_seed(0)
    model = ModelSpec("torchvision:mobilenet_v2").build(num_classes=2)
    path = tmp_path_factory.mktemp("tv") / "mnv2.pt"
    save_checkpoint(path, model, {"note": "random init"})
    return str(path)


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A user's model package on sys.path: a good builder and the kinds the wrappers must refuse."""
    (tmp_path / "my_nets.py").write_text(
        textwrap.dedent("""
        import torch
        from torch import nn
        from torch.nn import functional as F

        class Small(nn.Module):
            def __init__(self, width=8, num_classes=10):
                super().__init__()
                self.stem = nn.Conv2d(3, width, 3, padding=1)
                self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU())
                self.head = nn.Linear(width, num_classes)

            def forward(self, x):
                return self.head(self.body(self.stem(x)).mean((2, 3)))

        class Functional(Small):
            def __init__(self):
                super().__init__()
                self.extra = nn.Parameter(torch.randn(8, 8, 1, 1))

            def forward(self, x):
                y = F.conv2d(self.body(self.stem(x)), self.extra)
                return self.head(y.mean((2, 3)))

        class Shared(Small):
            def forward(self, x):
                y = self.body[1](self.body(self.stem(x)))
                return self.head(y.mean((2, 3)))

        class Flat(Small):
            def __init__(self):
                super().__init__()
                self.head = nn.Linear(8 * 16 * 16, 10)

            def forward(self, x):
                return self.head(self.body(self.stem(x)).flatten(1))

        def build(width=8, num_classes=10):
            return Small(width, num_classes)

        def not_a_model():
            return 42
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_nets"
    sys.modules.pop("my_nets", None)


def test_torchvision_mobilenet_v2_searches_an_image_folder(
    image_tree: Path, tv_checkpoint: str, tmp_path: Path
) -> None:
    env = gym.make(
        "HAQ-MobileNetV2-v0",
        model="torchvision:mobilenet_v2",
        dataset="imagefolder",
        data_root=str(image_tree),
        image_size=SIZE,
        checkpoint=tv_checkpoint,
        val_size=4,
        calibration_size=4,
        latency_budget=None,
        progress=False,
    )
    setup = env.unwrapped.setup
    assert (
        len(setup.layers) == 53 and setup.layer_names[0] == "features.0.0" and setup.layer_names[-1] == "classifier.1"
    )
    stem, last = setup.layer_infos[0], setup.layer_infos[-1]
    # torchvision's stride-2 stem at 64 px: 32x32 outputs; MACs = weights x output positions, from the traced pass.
    assert (stem.in_h, stem.out_h, stem.macs) == (SIZE, SIZE // 2, 32 * 3 * 3 * 3 * (SIZE // 2) ** 2)
    assert (last.kind, last.in_channels, last.out_channels) == ("linear", 1280, 2)
    assert env.unwrapped.pinned[0] == [8, -1] and env.unwrapped.pinned[-1] == [8, 8]
    assert len(env.unwrapped.decisions) == 2 * 53 - 4
    env.reset(seed=0)
    done, info = False, {}
    while not done:
        _, _, done, _, info = env.step(np.array([0.5], dtype=np.float32))
    policy = env.unwrapped.policy_file(info)
    assert policy.model == "torchvision:mobilenet_v2" and policy.model_kwargs["image_size"] == SIZE
    policy.save(tmp_path / "policy.json")

    # The export rebuilds the same model from the policy file with the shared builder (no search setup).
    source = source_from_policy(
        PolicyFile.load(tmp_path / "policy.json"),
        data_root=str(image_tree),
        float_checkpoint=tv_checkpoint,
        calibration_size=4,
    )
    assert [n for n, _ in source.layers] == setup.layer_names and source.bits == policy.bits
    assert source.calibration_images.shape[-1] == SIZE

    # The finetune takes the same policy and streams the folder with random-resized crops.
    out = tmp_path / "ft"
    assert (
        finetune_main(
            [
                "--policy",
                str(tmp_path / "policy.json"),
                "--data-root",
                str(image_tree),
                "--epochs",
                "1",
                "--batch-size",
                "8",
                "--init-checkpoint",
                tv_checkpoint,
                "--output",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    ckpt = QuantizedModel.from_checkpoint(out / "best.pt")
    assert ckpt.spec.name == "torchvision:mobilenet_v2" and ckpt.meta["image_size"] == SIZE
    assert [[m.w_bit, m.a_bit] for m in ckpt.modules] == policy.bits


def test_image_folder_defaults_follow_haq_and_stream(image_tree: Path) -> None:
    bundle = load_dataset("imagefolder", image_tree, image_size=SIZE, num_workers=0)
    # 16 training images: too few for HAQ's 10k/20k, so 10% are held out and the rest is the train subset.
    assert (len(bundle.search_val), len(bundle.search_train), len(bundle.train)) == (1, 15, 15)
    assert bundle.train_augmented is not None and len(bundle.train_augmented) == len(bundle.train)
    torch.manual_seed(0)
    a, _ = bundle.train_augmented[0]
    b, _ = bundle.train_augmented[0]
    assert a.shape == (3, SIZE, SIZE) and not torch.equal(a, b)  # random-resized crop per read
    assert torch.equal(bundle.train[0][0], bundle.train[0][0])  # evaluation transform is fixed


def test_import_path_model_with_kwargs_and_checkpoint(user_module: str, tmp_path: Path) -> None:
    spec = ModelSpec(f"{user_module}:build", kwargs={"width": 4})
    net = spec.build(num_classes=10)
    assert net.stem.out_channels == 4 and net.head.out_features == 10
    save_checkpoint(tmp_path / "w.pt", net, {})
    qm = QuantizedModel.from_policy([[8, -1], [4, 4], [8, 8]], spec, 10, 32, checkpoint=str(tmp_path / "w.pt"))
    assert qm.layer_names == ["stem", "body.1", "head"]
    assert [[m.w_bit, m.a_bit] for m in qm.modules] == [[8, -1], [4, 4], [8, 8]]
    assert torch.equal(qm.model.stem.weight, net.stem.weight)

    env = gym.make(
        "HAQ-MobileNetV2-v0",
        model=f"{user_module}:build",
        model_kwargs={"width": 4},
        checkpoint=str(tmp_path / "w.pt"),
        val_size=16,
        calibration_size=4,
        latency_budget=None,
        progress=False,
    )
    assert env.unwrapped.setup.layer_names == ["stem", "body.1", "head"]
    assert len(env.unwrapped.decisions) == 2  # first and last pinned: body.1's weight and activation bits

    wider = ModelSpec(f"{user_module}:build", kwargs={"width": 6}).build(10)
    save_checkpoint(tmp_path / "wide.pt", wider, {})
    with pytest.raises(ValueError, match=r"shape mismatches \(e.g. 'stem.weight'"):
        QuantizedModel.from_float(spec, 10, 32, checkpoint=str(tmp_path / "wide.pt"))
    with pytest.raises(ValueError, match="needs float weights: pass checkpoint="):
        QuantizedModel.from_float(spec, 10, 32)


@pytest.mark.parametrize(
    "name, message",
    [
        ("Functional", r"functional conv2d in module '<root>' \(weight extra\)"),
        ("Shared", r"layer 'body.1' is called 2 times per forward pass \(weight sharing\)"),
        ("Flat", r"cannot take 16x16 RGB images"),
    ],
)
def test_models_the_wrappers_cannot_handle_are_named(user_module: str, name: str, message: str) -> None:
    module = sys.modules.get(user_module) or __import__(user_module)
    model = getattr(module, name)()
    with pytest.raises(UnsupportedModelError, match=message):
        check_quantizable(model, 16 if name == "Flat" else 32, 10)


def test_bad_model_names_are_clear_errors(user_module: str) -> None:
    with pytest.raises(ModelSpecError, match=r"module 'no_such_pkg.models' does not import: ModuleNotFoundError"):
        ModelSpec("no_such_pkg.models:build").build(10)
    with pytest.raises(ModelSpecError, match="has no attribute 'nope'"):
        ModelSpec(f"{user_module}:nope").build(10)
    with pytest.raises(ModelSpecError, match=r"returned a int, expected a torch\.nn\.Module"):
        ModelSpec(f"{user_module}:not_a_model").build(10)
    with pytest.raises(ModelSpecError, match="torchvision has no classification model 'mobilenet_v9'"):
        ModelSpec("torchvision:mobilenet_v9").build(10)
    with pytest.raises(UnsupportedModelError, match=r"returns \(1, 10\) for one image; expected logits \[1, 3\]"):
        check_quantizable(ModelSpec(f"{user_module}:build").build(10), 32, 3)


def test_haq_strategy_lists_are_validated(tmp_path: Path) -> None:
    names = ["a", "b", "c"]
    assert check_policy([[8, -1], [6, 6], [8, 8]], names, 2, 8) == [[8, -1], [6, 6], [8, 8]]
    with pytest.raises(ValueError, match=r"lists 2 .* pairs but the model has 3 quantizable layers"):
        check_policy([[8, -1], [8, 8]], names, 2, 8)
    with pytest.raises(ValueError, match=r"layer 'b' has 9 bits; supported range is 2\.\.8"):
        check_policy([[8, -1], [9, 6], [8, 8]], names, 2, 8)
    assert read_policy_argument("[[8, -1], [6, 6], [8, 8]]") == [[8, -1], [6, 6], [8, 8]]
    (tmp_path / "strategy.txt").write_text("[[8, -1], [5, 4], [8, 8]]\n")
    assert read_policy_argument(str(tmp_path / "strategy.txt")) == [[8, -1], [5, 4], [8, 8]]
    with pytest.raises(ValueError, match="list of \\[w_bit, a_bit\\] integer pairs"):
        read_policy_argument("[[8, -1], [6]]")


def test_finetune_takes_a_haq_strategy_list(tiny_checkpoint: str, tmp_path: Path, capsys) -> None:
    strategy = [[8, -1]] + [[6, 5]] * 51 + [[8, 8]]
    common = [
        "--model",
        "mobilenetv2",
        "--width-mult",
        "0.35",
        "--epochs",
        "1",
        "--lr",
        "1e-9",
        "--init-checkpoint",
        tiny_checkpoint,
        "--no-progress",
    ]
    assert finetune_main(["--policy", str(strategy[:-1]), *common, "--output", str(tmp_path / "short")]) == 2
    assert "lists 52 [w_bit, a_bit] pairs but the model has 53" in capsys.readouterr().err
    assert not (tmp_path / "short").exists()
    assert finetune_main(["--policy", str(strategy), *common, "--output", str(tmp_path / "ok")]) == 0
    saved = PolicyFile.load(tmp_path / "ok" / "policy.json")
    assert saved.bits == strategy and saved.model == "mobilenetv2" and len(saved.layer_names) == 53
