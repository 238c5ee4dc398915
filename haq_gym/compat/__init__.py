"""Compatibility helpers for the platforms haq-gym runs on."""

from haq_gym.compat.torchvision_shim import ensure_torchvision_importable

__all__ = ["ensure_torchvision_importable"]
