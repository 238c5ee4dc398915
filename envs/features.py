"""HAQ's static per-layer features, min-max normalised over the model's layers."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from haq_gym.cost import LayerInfo

STATIC_FEATURES = (
    "is_depthwise",
    "in_channels",
    "out_channels",
    "stride",
    "kernel_size",
    "weight_count",
    "input_feature_size",
    "layer_index",
)


FC_FEATURE_MAPS = ("one", "in_features")


def static_layer_features(layers: Sequence[LayerInfo], fc_feature_map: str = "one") -> np.ndarray:
    """``[n_layers, 8]`` float32 in [0, 1]: HAQ's eight static features per layer.

    Each column is min-max scaled over the layers; a constant column becomes 0 (HAQ left
    such columns raw, which can fall outside [0, 1]). A fully connected layer's input
    feature-map size is 1 (its input is 1x1); ``fc_feature_map="in_features"`` uses its
    input width instead, as HAQ's ``measure_model`` does.
    """
    if fc_feature_map not in FC_FEATURE_MAPS:
        raise ValueError(f"unknown fc_feature_map {fc_feature_map!r}; expected one of {', '.join(FC_FEATURE_MAPS)}")

    def feature_map(layer: LayerInfo) -> float:
        if layer.kind == "linear" and fc_feature_map == "in_features":
            return float(layer.in_channels)
        return float(layer.in_h * layer.in_w)

    raw = np.array(
        [
            [
                1.0 if layer.kind == "depthwise" else 0.0,
                layer.in_channels,
                layer.out_channels,
                layer.stride,
                layer.kernel_size,
                layer.weight_count,
                feature_map(layer),
                layer.index,
            ]
            for layer in layers
        ],
        dtype=np.float64,
    )
    lo, hi = raw.min(axis=0), raw.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    return ((raw - lo) / span).astype(np.float32)
