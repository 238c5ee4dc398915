"""HAQ's k-means model-size search (its first flow) as a Gymnasium environment."""

from __future__ import annotations

import os

import numpy as np
from gymnasium import spaces

from envs.features import STATIC_FEATURES, static_layer_features
from envs.policy_decision_env import ACTION_MODES, PolicyDecisionEnv, bit_action_space
from haq_gym.problem import KMeansProblem, ProblemConfig
from haq_gym.problem.config import KMEANS
from haq_gym.quant.kmeans_quantizer import MAX_KMEANS_BIT, MIN_KMEANS_BIT
from haq_gym.search_setup import SearchSetup
from haq_gym.validation import check_env_keywords

OBSERVATION_FEATURES = STATIC_FEATURES + ("previous_bits", "size_spent", "size_slack")


class KMeansQuantizeEnv(PolicyDecisionEnv):
    """Choose a k-means weight bit width for every layer of a network, under a model-size budget.

    This is HAQ's first flow (its ``QuantizeEnv``; Wang et al., CVPR 2019, after Deep
    Compression): weight sharing instead of linear quantization. A layer at ``b`` bits
    keeps ``2**b`` shared values, found by k-means on its weights, and stores a ``b``-bit
    centroid index per weight. Activations stay float.

    The search problem is ``self.problem``, a :class:`~haq_gym.problem.KMeansProblem`; the
    env adds the MDP and its last step is one ``problem.evaluate`` call.

    ## What differs from ``HAQ-MobileNetV2-v0`` (:class:`~envs.linear_quantize_env.LinearQuantizeEnv`)
    - one decision per layer (weight bits only), every layer searched, none pinned;
    - bits ``1..8`` by default (HAQ's k-means range; 1 bit = 2 shared values);
    - weights are clustered (:class:`~haq_gym.quant.kmeans_quantizer.KMeansWeightQuantizer`,
      cached per layer and bit width), not rounded to a uniform grid;
    - one budget, ``size_budget``: the weights' bits as a ratio to the 32-bit float model
      (HAQ's ``preserve_ratio``; 0.1 = "10x smaller"); no latency budget;
    - the reward is always HAQ's, ``0.1 * (acc - float_acc)``.

    ## Registered ids
    ``HAQ-KMeans-MobileNetV2-v0`` (53 layers), ``HAQ-KMeans-MobileNetV3Small-v0`` (54),
    ``HAQ-KMeans-ResNet20-v0`` (20) and ``HAQ-KMeans-ResNet18-v0`` (21): the models of the
    linear ids, one decision per layer.

    ## Action space
    As the linear env: ``action_mode="continuous"`` is ``Box(0, 1, (1,), float32)`` mapped
    to ``min_bit..max_bit`` by HAQ's equal-width bins; ``"discrete"`` is
    ``Discrete(max_bit - min_bit + 1)``.

    ## Observation space
    ``Box(0, 1, (11,), float32)`` for the layer of the current decision:

    | index | feature | meaning |
    |---|---|---|
    | 0-7 | HAQ's static features | as in the linear env (min-max scaled over the layers) |
    | 8 | previous_bits | bits of the previous decision / max_bit (1.0 before the first) |
    | 9 | size_spent | size ratio (to 32-bit) of the policy so far, undecided layers at min_bit |
    | 10 | size_slack | size_budget minus size_spent, clipped to [0, 1] |

    HAQ's k-means state has the static features and the previous bits (unnormalised);
    it has no size features.

    ## Reward
    0 on every step but the last; then ``0.1 * (acc - float_acc)``, top-1 in percent on
    the held-out validation subset (HAQ's k-means env also uses its held-out subset).

    ## Episode end
    ``terminated`` after the last layer's decision; no truncation. The policy is made to
    fit the budget (``enforcement``: ``"greedy"`` lowers the layer with the most bits saved
    per added quantization noise; ``"haq"`` is HAQ's wall, one bit off each layer from the
    last to the first, round after round), the layers are clustered (cached), optionally
    finetuned ``finetune_steps`` SGD steps with the cluster assignment fixed (HAQ's
    centroid re-projection; unlike HAQ, layers above 6 bits are re-projected too), and
    evaluated. The final ``info`` holds ``accuracy``, ``reference_accuracy``,
    ``flash_ratio`` (the size ratio to the 32-bit model, the budgeted figure),
    ``size_bytes`` (packed indices, ``sum(numel * bits) / 8``), ``file_bytes`` (the size of
    the file :meth:`write_model_file` writes: indices, float32 codebooks, header),
    ``latency_ratio`` and ``bitops_ratio`` (the cost model's figures with float
    activations costed at 8 bits; not budgeted, reported for comparison), ``policy``
    (``[[w_bit, -1], ...]`` after enforcement), ``agent_policy``, ``budget_met``,
    ``eval_time_s``, ``cached`` and ``reward``.

    ## Arguments
    Keywords of ``gym.make("HAQ-KMeans-MobileNetV2-v0", ...)``: ``model``, ``width_mult``,
    ``dataset``, ``data_root``, ``download``, ``checkpoint``, ``pretrain_epochs``,
    ``val_size``, ``train_size``, ``finetune_steps``, ``finetune_lr``, ``eval_batch_size``,
    ``device``, ``progress``, ``action_mode``, ``enforcement`` as in the linear env, and:

    - ``model``, ``model_kwargs``, ``weights``, ``image_size``, ``dataset``, ``checkpoint``...: the network
      and data, as in the linear env (any torchvision or user model; docs/models_and_data.md).
    - ``size_budget=0.1``: the weights' size as a ratio to 32-bit (at least ``min_bit / 32``).
    - ``min_bit=1``, ``max_bit=8``: the bit range searched.
    - ``latency_table=None``, ``hardware=None``: the latency table behind the reported
      (unbudgeted) ``latency_ratio``, as in the linear env.
    - ``setup=None``: a prebuilt :class:`~haq_gym.search_setup.SearchSetup`; its layers get
      k-means weight quantizers in place, so do not share it with a linear env.

    ## Version history
    - v0: initial version.
    """

    def __init__(
        self,
        *,
        model: str = "mobilenetv2",
        width_mult: float = 1.0,
        dataset: str = "digits",
        data_root: str | None = None,
        download: bool = False,
        checkpoint: str | None = None,
        pretrain_epochs: int | None = None,
        val_size: int | None = None,
        train_size: int | None = None,
        size_budget: float = 0.1,
        min_bit: int = MIN_KMEANS_BIT,
        max_bit: int = MAX_KMEANS_BIT,
        latency_table: str | None = None,
        hardware: str | None = None,
        action_mode: str = "continuous",
        enforcement: str = "greedy",
        finetune_steps: int = 0,
        finetune_lr: float = 1e-3,
        eval_batch_size: int = 256,
        device: str = "cpu",
        progress: bool = True,
        render_mode: str | None = None,
        setup: SearchSetup | None = None,
        model_kwargs: dict | None = None,
        weights: str | None = None,
        image_size: int | None = None,
    ) -> None:
        check_env_keywords({"size_budget": size_budget})  # the problem calls it flash_budget; say the env's name
        config = ProblemConfig(
            model=model,
            width_mult=width_mult,
            dataset=dataset,
            data_root=data_root,
            download=download,
            checkpoint=checkpoint,
            pretrain_epochs=pretrain_epochs,
            val_size=val_size,
            train_size=train_size,
            calibration_size=1,
            latency_budget=None,
            flash_budget=size_budget,
            min_bit=min_bit,
            max_bit=max_bit,
            latency_table=latency_table,
            hardware=hardware,
            enforcement=enforcement,
            reward="haq",
            finetune_steps=finetune_steps,
            finetune_lr=finetune_lr,
            pin_first_last=False,
            eval_batch_size=eval_batch_size,
            device=device,
            quantizer=KMEANS,
            progress=progress,
            model_kwargs=model_kwargs,
            weights=weights,
            image_size=image_size,
        )
        if action_mode not in ACTION_MODES:
            raise ValueError(f"unknown action_mode {action_mode!r}; expected one of {', '.join(ACTION_MODES)}")
        self._check_render_mode(render_mode)
        self._init_problem(KMeansProblem(config, setup))
        self.size_budget = size_budget
        self.action_mode, self.render_mode = action_mode, render_mode
        self.static = static_layer_features(self.setup.layer_infos)
        self.action_space = bit_action_space(action_mode, min_bit, max_bit)
        self.observation_space = spaces.Box(0.0, 1.0, shape=(len(OBSERVATION_FEATURES),), dtype=np.float32)

    def _observation(self, previous_bits: int | None) -> np.ndarray:
        layer, _ = self.decisions[min(self._step, len(self.decisions) - 1)]
        spent = self.problem.costs(self._fill(self._policy, self.min_bit)).flash_ratio
        dynamic = [1.0 if previous_bits is None else previous_bits / self.max_bit, spent, self.size_budget - spent]
        obs = np.concatenate([self.static[layer], np.asarray(dynamic, dtype=np.float32)])
        return np.clip(obs, 0.0, 1.0).astype(np.float32)

    # ----- artifacts
    def file_size(self, policy: list[list[int]]) -> int:
        """Bytes of the k-means file of ``policy`` (see :mod:`haq_gym.export.kmeans_file`)."""
        return self.problem.file_size(policy)

    def write_model_file(self, path: str | os.PathLike, policy: list[list[int]]) -> int:
        """Cluster the layers at ``policy``'s bits and write the codebook + packed-index file; returns its size."""
        return self.problem.write_model_file(path, policy)
