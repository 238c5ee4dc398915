"""The torchvision compatibility shim."""

from __future__ import annotations

import subprocess
import sys

from haq_gym.compat import ensure_torchvision_importable


def test_shim_is_idempotent_and_torchvision_models_import() -> None:
    ensure_torchvision_importable()
    assert ensure_torchvision_importable() is False
    from torchvision.models import mobilenet_v2

    assert mobilenet_v2(num_classes=3).classifier[1].out_features == 3


def test_fresh_process_can_build_models_through_haq_gym() -> None:
    code = "from haq_gym.models import build_model; print(type(build_model('mobilenetv2', 10)).__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "MobileNetV2"
