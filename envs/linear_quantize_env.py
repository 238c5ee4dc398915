"""HAQ's linear mixed-precision quantization search as a Gymnasium environment."""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

from envs.features import FC_FEATURE_MAPS, STATIC_FEATURES, static_layer_features
from envs.policy_decision_env import ACTION_MODES, PolicyDecisionEnv, bit_action_space
from haq_gym.presets import apply_preset
from haq_gym.problem import PolicyProblem, ProblemConfig
from haq_gym.problem.config import KMEANS
from haq_gym.search_setup import SearchSetup

OBSERVATION_FEATURES = STATIC_FEATURES + (
    "previous_bits",
    "is_activation",
    "latency_spent",
    "flash_spent",
    "latency_slack",
    "flash_slack",
)


class LinearQuantizeEnv(PolicyDecisionEnv):
    """Choose a weight and an activation bit width for every layer of a network, under latency and flash budgets.

    This is HAQ's linear-quantization MDP (Wang et al., CVPR 2019) on a real network:
    one step per decision, the weight bits of a layer, then its input-activation bits,
    layer after layer in module order. When every decision is made, the policy is made
    to fit the budgets, applied to the quantized model, calibrated and (optionally)
    finetuned, and its top-1 accuracy on a held-out validation subset gives the reward
    (HAQ's own reward has no held-out signal; ``preset="haq"`` restores it and every other
    behaviour of the original code: docs/haq_fidelity.md).

    The search problem itself (decisions, costs, budget, evaluation, reward) is
    ``self.problem``, a :class:`~haq_gym.problem.PolicyProblem` built from these keywords;
    the env adds the MDP and its last step is one ``problem.evaluate`` call.

    ## Decisions
    Every quantizable layer (each Conv2d and Linear; 53 for MobileNetV2) has a weight
    and an input-activation bit width. The first layer's input is the image and is never
    quantized (``a_bit = -1``). With ``pin_first_last=True`` (the seeds' convention) the
    first layer is fixed at ``[8, -1]`` and the last at ``[8, 8]`` and the agent is not
    asked about them: MobileNetV2 has 102 decisions per episode. HAQ asks all 106 and
    writes those pins only when its budget wall runs, so a raw policy that already meets
    the budget keeps the agent's own first and last bits; ``pin_first_last="wall"`` does
    the same.

    ## Registered ids
    Each id fixes ``model`` (CIFAR-style 32x32 variants; details in docs/environments.md):

    | id | model | layers | decisions |
    |---|---|---|---|
    | ``HAQ-MobileNetV2-v0`` | torchvision MobileNetV2 | 53 | 102 |
    | ``HAQ-MobileNetV3Small-v0`` | torchvision MobileNetV3-Small; its 18 squeeze-excitation 1x1 convs too | 54 | 104 |
    | ``HAQ-ResNet20-v0`` | He et al.'s CIFAR ResNet-20, option-A shortcuts | 20 | 36 |
    | ``HAQ-ResNet18-v0`` | torchvision ResNet-18, 3x3 stride-1 stem, no max-pool (3 1x1 shortcut convs) | 21 | 38 |

    ## Action space
    ``action_mode="continuous"``: ``Box(0, 1, (1,), float32)``, mapped to bits as HAQ
    does, ``round((max_bit - min_bit + 1) * a + min_bit - 0.5)`` (equal-width bins),
    clipped to ``[min_bit, max_bit]``.
    ``action_mode="discrete"``: ``Discrete(max_bit - min_bit + 1)``, action ``k`` means
    ``min_bit + k`` bits.

    ## Observation space
    ``Box(0, 1, (14,), float32)`` describing the layer of the current decision:

    | index | feature | meaning |
    |---|---|---|
    | 0-7 | HAQ's static features | is depthwise, in/out channels, stride, kernel, weight count, input |
    |     |                       | feature-map size, layer index; each min-max scaled over the layers |
    | 8 | previous_bits | bits of the previous decision / max_bit (1.0 before the first decision) |
    | 9 | is_activation | 0 for a weight decision, 1 for an activation decision |
    | 10 | latency_spent | latency ratio of the decided layers (undecided ones counted at min_bit) |
    | 11 | flash_spent | the same for the flash ratio |
    | 12 | latency_slack | latency budget minus latency_spent, clipped to [0, 1] (1 when unconstrained) |
    | 13 | flash_slack | the same for flash |

    Features 10-13 are additions: HAQ's agent never sees how much budget is left.
    Features 8-9 fix two bugs of HAQ's state columns, which it writes in place and never
    resets: the first observation of an episode showed the previous episode's first weight
    decision (flag 1), and the flag, 1 before layer 0's weight decision, is 1 before every
    activation and 0 before every later weight decision, so its meaning flips after layer 0.
    The fixes stay under ``preset="haq"``: they change what the agent sees, not the policy's
    cost or accuracy.

    ## Reward
    0 on every step but the last. The last step's reward is the ``reward`` strategy
    (see :mod:`haq_gym.rewards`) on the validation accuracy of the budget-enforced
    policy; HAQ's is ``0.1 * (acc - float_acc)`` with accuracies in percent.
    ``reward_accuracy="finetune_running"`` measures ``acc`` as HAQ does with its per-episode
    finetune on (the running train-mode top-1 during the finetune, against the float model
    on the train subset); ``use_top5=True`` uses top-5.

    ## Episode end
    ``terminated`` is True after the last decision; there is no truncation. The final
    ``info`` holds ``accuracy``, ``reference_accuracy``, ``latency_ratio``,
    ``flash_ratio``, ``bitops_ratio``, ``policy`` (``[[w_bit, a_bit], ...]`` after
    enforcement), ``agent_policy`` (before), ``budget_met`` (also as ``is_success``, the
    key SB3's success-rate logging reads), ``eval_time_s`` and ``cached`` (identical
    policies are evaluated once). Stepping after the end raises.

    ## Budgets and enforcement
    ``latency_budget`` and ``flash_budget`` are ratios to every layer at ``float_bit``
    bits; either may be ``None``. A budget below the cheapest policy's cost is rejected
    at construction. ``enforcement="greedy"`` (default) trims the bits that buy the most
    cost per unit of added quantization noise; ``"haq"`` is HAQ's published round-robin
    wall. See :mod:`haq_gym.cost.enforcement`.

    ## Arguments
    All are keywords of ``gym.make("HAQ-MobileNetV2-v0", ...)``:

    - ``model="mobilenetv2"``, ``width_mult=1.0``: the network (``mobilenetv2``, ``mobilenetv3small``,
      ``resnet20``, ``resnet18``; the registered ids fix it, ``model=`` overrides it): or any
      ``torchvision:<name>`` (``weights=`` passed through, e.g. ``DEFAULT``) or a builder of your own,
      ``package.module:builder`` (keywords from ``model_kwargs=``); see docs/models_and_data.md.
    - ``image_size=None``: the input size of an ``imagefolder`` dataset (default 224).
    - ``dataset="digits"``, ``data_root=None``, ``download=False``: ``digits`` (embedded), ``cifar10``,
      ``cifar100``, ``fashion-mnist``, ``mnist``, ``imagefolder``.
    - ``checkpoint=None``: float checkpoint path; ``None`` trains/loads the cached default model.
    - ``pretrain_epochs=None``: epochs of the default model's training (``None``: the standard recipe).
    - ``val_size``, ``train_size``: held-out validation subset and finetune/calibration subset sizes (dataset defaults).
    - ``calibration_size=64``: images in the calibration batch.
    - ``latency_budget=0.5``, ``flash_budget=None``, ``float_bit=8``: budgets and the reference precision.
    - ``min_bit=2``, ``max_bit=8``: the bit range searched.
    - ``latency_table=None``: HAQ-format ``.npy`` table; ``None`` builds one with the analytic accelerator
      (``hardware``: YAML of its parameters).
    - ``action_mode="continuous"``, ``enforcement="greedy"``, ``reward="haq"``.
    - ``finetune_steps=0`` or ``finetune_epochs=0``, ``finetune_lr=1e-3``, ``finetune_batch_size=64``: HAQ's
      per-episode finetune (SGD steps, or whole passes, on the train subset; not both).
    - ``pin_first_last=True``: ``True`` pins the first/last layers, ``False`` lets the agent decide them
      (the first layer's input stays unquantized), ``"wall"`` lets it decide all of them and pins only when
      the budget wall runs (HAQ).
    - ``eval_batch_size=256``, ``device="cpu"``, ``progress=True`` (bar while pretraining).
    - ``quantizer="linear"``: the quantizers policies are evaluated with: ``linear`` (haq-gym's linear
      quantization: HAQ's grids with an MSE-optimal clip at every width, frozen ranges), ``haq`` (HAQ's own:
      KL-J clip below 5 bits, max otherwise, activations capped at 6.0, the activation range trained by
      the per-episode finetune) or ``lsq``/``lsq+``/``pot`` (HAQ-LSQ: the learned-step quantizers the finetune
      trains, at their initial steps for each policy; combine with ``finetune_steps`` to learn them).
    - ``calibration="once"``: one fixed batch at construction, or ``"per_episode"`` (HAQ: a fresh augmented
      train batch of ``calibration_size`` images before every evaluation; identical policies are then
      evaluated again rather than answered from the cache).
    - ``unquantized_cost="float_bit"``: cost of the unquantized first-layer input; ``"haq"`` reads the
      table's column -2 (7 bits), as HAQ's indexing does.
    - ``reward_accuracy="val"`` (or ``"finetune_running"``, needs a finetune), ``use_top5=False``.
    - ``fc_feature_map="one"``: a fully connected layer's input feature-map feature; ``"in_features"`` is HAQ's.
    - ``preset=None``: ``"haq"`` sets every keyword above to HAQ's behaviour (:mod:`haq_gym.presets`; the
      problem's keywords are resolved by :class:`~haq_gym.problem.ProblemConfig`, ``fc_feature_map`` here); a
      keyword given with a value that contradicts it is refused.
    - ``setup=None``: a prebuilt :class:`~haq_gym.search_setup.SearchSetup` (several envs and problems can
      share one model and its evaluation cache); the model/data keywords are then ignored, and a setup
      that measures costs or accuracy otherwise than the keywords ask is refused.

    The ``-v1`` ids (``HAQ-MobileNetV2-v1``, ``HAQ-MobileNetV3Small-v1``, ``HAQ-ResNet20-v1``,
    ``HAQ-ResNet18-v1``) are the same networks with v1's reward defaults (see Version history).

    ## Version history
    - v0: initial version. The reward is the accuracy right after quantization (HAQ's linear
      quantizer, no finetune).
    - v1: the reward's accuracy is measured after ``quantizer="lsq"`` and ``finetune_steps=20``
      SGD steps at ``finetune_lr=0.01`` (HAQ-LSQ with a short finetune). Why: on Fashion-MNIST at
      the latency of uniform W3A2 (``benchmarks/end_to_end.py``, one H200, 28 policies per
      network, each LSQ-finetuned for 2 epochs), v0's reward sat at chance (about 10% top-1) for
      most policies of MobileNetV2 and ranked them no better than chance against their finetuned
      test accuracy (Kendall tau -0.04 MobileNetV2, -0.01 ResNet-20). The LSQ-initialised accuracy
      alone did no better (0.02, 0.00); after 20 LSQ steps the accuracies spread over 54-83% and the
      ranking improved (tau 0.16, 0.24; top third by proxy 0.00 and 0.76), at about 1.3-3.4x the
      evaluation time (measured with 15 runs sharing the GPU). Still weak: see docs/end_to_end.md.
      Passing the keywords explicitly overrides these defaults; v0 keeps its behaviour.
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
        calibration_size: int = 64,
        latency_budget: float | None = 0.5,
        flash_budget: float | None = None,
        float_bit: int = 8,
        min_bit: int = 2,
        max_bit: int = 8,
        latency_table: str | None = None,
        hardware: str | None = None,
        action_mode: str = "continuous",
        enforcement: str = "greedy",
        reward: str = "haq",
        finetune_steps: int = 0,
        finetune_lr: float = 1e-3,
        pin_first_last: bool | str = True,
        eval_batch_size: int = 256,
        device: str = "cpu",
        quantizer: str = "linear",
        progress: bool = True,
        render_mode: str | None = None,
        setup: SearchSetup | None = None,
        preset: str | None = None,
        unquantized_cost: str = "float_bit",
        calibration: str = "once",
        finetune_epochs: int = 0,
        finetune_batch_size: int = 64,
        reward_accuracy: str = "val",
        use_top5: bool = False,
        fc_feature_map: str = "one",
        model_kwargs: dict | None = None,
        weights: str | None = None,
        image_size: int | None = None,
    ) -> None:
        if quantizer == KMEANS:
            raise ValueError("quantizer='kmeans' is the k-means flow: use a HAQ-KMeans-* env")
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
            calibration_size=calibration_size,
            latency_budget=latency_budget,
            flash_budget=flash_budget,
            float_bit=float_bit,
            min_bit=min_bit,
            max_bit=max_bit,
            latency_table=latency_table,
            hardware=hardware,
            enforcement=enforcement,
            reward=reward,
            finetune_steps=finetune_steps,
            finetune_lr=finetune_lr,
            pin_first_last=pin_first_last,
            eval_batch_size=eval_batch_size,
            device=device,
            quantizer=quantizer,
            progress=progress,
            model_kwargs=model_kwargs,
            weights=weights,
            image_size=image_size,
            unquantized_cost=unquantized_cost,
            calibration=calibration,
            finetune_epochs=finetune_epochs,
            finetune_batch_size=finetune_batch_size,
            reward_accuracy=reward_accuracy,
            use_top5=bool(use_top5),
            preset=preset,
        )
        fc_feature_map = apply_preset(preset, {"fc_feature_map": fc_feature_map}, {"fc_feature_map": "one"})[
            "fc_feature_map"
        ]
        if fc_feature_map not in FC_FEATURE_MAPS:
            raise ValueError(f"unknown fc_feature_map {fc_feature_map!r}; expected one of {', '.join(FC_FEATURE_MAPS)}")
        if action_mode not in ACTION_MODES:
            raise ValueError(f"unknown action_mode {action_mode!r}; expected one of {', '.join(ACTION_MODES)}")
        self._check_render_mode(render_mode)
        self._init_problem(PolicyProblem(config, setup))
        self.action_mode, self.render_mode = action_mode, render_mode
        self.float_bit, self.reward_name = float_bit, reward
        self.static = static_layer_features(self.setup.layer_infos, fc_feature_map)
        self.action_space = bit_action_space(action_mode, min_bit, max_bit)
        self.observation_space = spaces.Box(0.0, 1.0, shape=(len(OBSERVATION_FEATURES),), dtype=np.float32)

    @property
    def preset(self) -> str | None:
        """The preset the problem was built with (the HAQ DDPG runner reads it for HAQ's replay size)."""
        return self.problem.config.preset

    @property
    def wall_pins(self) -> list[list[int | None]] | None:
        """Pins written only when the budget wall runs (``pin_first_last="wall"``), else ``None``."""
        return self.problem.wall_pins

    @property
    def n_layers(self) -> int:
        """Quantizable layers of the model (HAQ sizes its replay memory by this)."""
        return len(self.setup.layers)

    # ----- MDP pieces
    def _observation(self, previous_bits: int | None) -> np.ndarray:
        step = min(self._step, len(self.decisions) - 1)
        layer, j = self.decisions[step]
        costs = self.problem.costs(self._fill(self._policy, self.min_bit))
        lat_slack = 1.0 if self.budget.latency is None else self.budget.latency - costs.latency_ratio
        flash_slack = 1.0 if self.budget.flash is None else self.budget.flash - costs.flash_ratio
        dynamic = [
            1.0 if previous_bits is None else previous_bits / self.max_bit,
            float(j),
            costs.latency_ratio,
            costs.flash_ratio,
            lat_slack,
            flash_slack,
        ]
        obs = np.concatenate([self.static[layer], np.asarray(dynamic, dtype=np.float32)])
        return np.clip(obs, 0.0, 1.0).astype(np.float32)
