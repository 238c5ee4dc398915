"""HAQ's static per-layer features, min-max normalised over the model's layers."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from haq_gym.cost import LayerInfo

STATIC_FEATURES = ("is_depthwise", "in_channels", "out_channels", "stride", "kernel_size", "weight_count",
                   "input_feature_size", "layer_index")


def static_layer_features(layers: Sequence[LayerInfo]) -> np.ndarray:
    """``[n_layers, 8]`` float32 in [0, 1]: HAQ's eight static features per layer.

    Each column is min-max scaled over the layers; a constant column becomes 0 (HAQ left
    such columns raw, which can fall outside [0, 1]).
    """
    raw = np.array([[1.0 if l.kind == "depthwise" else 0.0, l.in_channels, l.out_channels, l.stride, l.kernel_size,
                     l.weight_count, l.in_h * l.in_w, l.index] for l in layers], dtype=np.float64)
    lo, hi = raw.min(axis=0), raw.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    return ((raw - lo) / span).astype(np.float32)
