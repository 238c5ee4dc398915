"""HAQ's k-means model-size flow as a policy problem: weight bits only, every layer free, a size budget."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from haq_gym.cost import CostModel, Costs
from haq_gym.cost.kmeans_size import kmeans_file_size
from haq_gym.problem.policy_problem import PolicyProblem
from haq_gym.quant import apply_policy
from haq_gym.quant.kmeans_quantizer import use_kmeans_weights
from haq_gym.search_setup import SearchSetup

REFERENCE_BIT = 32
"""Model size is measured against the 32-bit float model, as in HAQ's k-means flow."""


class KMeansProblem(PolicyProblem):
    """Weight sharing instead of linear quantization (HAQ's first flow, after Deep Compression).

    One decision per layer (its weight bits; activations stay float, ``-1``), none pinned.
    The setup's layers get k-means weight quantizers in place, so do not share a setup
    with a linear problem. The flash ratio is measured against 32-bit weights and is the
    budgeted size. Outcomes carry ``size_bytes`` (packed indices) and ``file_bytes`` (the
    file :meth:`write_model_file` writes).
    """

    def _adapt(self, setup: SearchSetup) -> SearchSetup:
        use_kmeans_weights(setup.layers)
        size_model = CostModel(
            setup.layer_infos,
            setup.cost_model.table,
            float_bit=setup.cost_model.float_bit,
            flash_reference_bit=REFERENCE_BIT,
        )
        return replace(setup, cost_model=size_model)

    def _pinned_policy(self, n: int) -> list[list[int | None]]:
        return [[None, -1] for _ in range(n)]

    def _extras(self, policy: list[list[int]], costs: Costs) -> dict[str, float]:
        return {"size_bytes": costs.flash_bits / 8, "file_bytes": self.file_size(policy)}

    def file_size(self, policy: list[list[int]]) -> int:
        """Bytes of the k-means file of ``policy`` (the cost :func:`haq_gym.cost.kmeans_size.kmeans_file_size`)."""
        s = self.setup
        return kmeans_file_size(
            [
                (name, tuple(layer.weight.shape), int(w))
                for name, layer, (w, _) in zip(s.layer_names, s.layers, policy, strict=True)
            ]
        )

    def write_model_file(self, path: str | os.PathLike[str], policy: list[list[int]]) -> int:
        """Cluster the layers at ``policy``'s bits and write the codebook + packed-index file; returns its size.

        The codebooks are the clustering of the float weights (the state every evaluation
        starts from); finetuned shared values are not kept between evaluations.
        """
        from haq_gym.export.kmeans_file import kmeans_layers, write_kmeans_file

        apply_policy(self.setup.layers, policy)
        return write_kmeans_file(path, kmeans_layers(list(zip(self.setup.layer_names, self.setup.layers, strict=True))))

    def _file_costs(self, info: Mapping[str, Any]) -> dict[str, float]:
        return {
            "flash_ratio": float(info["flash_ratio"]),
            "size_bytes": float(info["size_bytes"]),
            "file_bytes": int(info["file_bytes"]),
            "latency_ratio": float(info["latency_ratio"]),
            "bitops_ratio": float(info["bitops_ratio"]),
        }

    def _file_budget(self) -> dict[str, Any]:
        return {"size": self.config.flash_budget, "reference_bit": REFERENCE_BIT}

    def _file_settings(self) -> dict[str, Any]:
        return {"reward_strategy": "haq", "quantizer": "kmeans", "checkpoint": self.setup.checkpoint}
