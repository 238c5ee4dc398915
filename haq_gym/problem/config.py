"""One typed set of settings for a search problem: the keywords both envs and the search setup take."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from haq_gym.cost import ENFORCEMENTS, BitSerialAccelerator
from haq_gym.cost.cost_model import check_float_bit
from haq_gym.cost.latency_table import unquantized_cost_bit
from haq_gym.evaluation import AccuracySettings
from haq_gym.presets import apply_preset
from haq_gym.quant.kmeans_quantizer import MAX_KMEANS_BIT, MIN_KMEANS_BIT
from haq_gym.rewards import REWARDS
from haq_gym.validation import check_env_keywords

KMEANS = "kmeans"
"""``quantizer`` of HAQ's k-means flow (weight sharing, weights only, size budget); the others are linear."""

LINEAR_BIT_RANGE = (2, 8)

PIN_MODES = (True, False, "wall")
"""``pin_first_last``: pin the first/last layers, let strategies decide them, or pin them only inside the wall (HAQ)."""

# Settings consumed by :func:`haq_gym.search_setup.build_search_setup` (model, data, costs, evaluator).
SETUP_FIELDS = (
    "model",
    "width_mult",
    "dataset",
    "data_root",
    "download",
    "checkpoint",
    "pretrain_epochs",
    "val_size",
    "train_size",
    "calibration_size",
    "latency_table",
    "hardware",
    "float_bit",
    "finetune_steps",
    "finetune_lr",
    "eval_batch_size",
    "device",
    "quantizer",
    "progress",
    "model_kwargs",
    "weights",
    "image_size",
    "unquantized_cost",
    "calibration",
    "finetune_epochs",
    "finetune_batch_size",
    "reward_accuracy",
    "use_top5",
)


@dataclass(frozen=True)
class ProblemConfig:
    """Everything that defines a policy problem; the defaults are ``HAQ-MobileNetV2-v0``'s.

    Model and data: ``model`` (a zoo name, ``torchvision:<name>`` or ``package.module:builder``,
    with ``model_kwargs`` and ``weights``), ``width_mult``, ``image_size``, ``dataset``, ``data_root``, ``download``,
    ``checkpoint`` (``None``: the cached default float model, trained on first use with
    ``pretrain_epochs``), ``val_size``, ``train_size``, ``calibration_size``.
    Costs and budget: ``latency_budget`` / ``flash_budget`` (ratios to the ``float_bit``
    model; ``None`` = unconstrained), ``latency_table`` (a ``.npy`` path or array),
    ``hardware`` (accelerator YAML when no table is given), ``enforcement`` (the wall that
    makes a policy fit), ``unquantized_cost`` (``"float_bit"``, or ``"haq"``: a ``-1`` entry
    costed at the table's column -2 as HAQ does). Decisions: ``min_bit..max_bit``,
    ``pin_first_last`` (``True``, ``False``, or ``"wall"``: every entry decided, HAQ's pins
    written only when the wall runs). Evaluation: ``quantizer`` (``linear``, ``haq``, ``lsq``,
    ``lsq+``, ``pot``, or ``kmeans`` for HAQ's k-means flow), ``finetune_steps`` or
    ``finetune_epochs`` (with ``finetune_batch_size``), ``finetune_lr``, ``calibration``
    (``"once"`` or ``"per_episode"``), ``reward_accuracy`` (``"val"`` or
    ``"finetune_running"``), ``use_top5``, ``eval_batch_size``, ``device``. Objective:
    ``reward`` (a name of :data:`haq_gym.rewards.REWARDS`). ``progress``: a bar while
    pretraining. ``preset``: ``"haq"`` fills in HAQ's value of every keyword left at its
    default (:mod:`haq_gym.presets`; a keyword set to another value is refused with
    :class:`~haq_gym.presets.PresetConflict`); after construction the fields hold the
    resolved values. Invalid values raise ``ValueError`` on construction, before anything is built (types
    and ranges by :func:`haq_gym.validation.check_env_keywords`, the same check as the command line's).
    """

    model: str = "mobilenetv2"
    width_mult: float = 1.0
    dataset: str = "digits"
    data_root: str | None = None
    download: bool = False
    checkpoint: str | None = None
    pretrain_epochs: int | None = None
    val_size: int | None = None
    train_size: int | None = None
    calibration_size: int = 64
    latency_budget: float | None = 0.5
    flash_budget: float | None = None
    float_bit: int = 8
    min_bit: int = 2
    max_bit: int = 8
    latency_table: str | np.ndarray | None = None
    hardware: str | BitSerialAccelerator | None = None
    enforcement: str = "greedy"
    reward: str = "haq"
    finetune_steps: int = 0
    finetune_lr: float = 1e-3
    pin_first_last: bool | str = True
    eval_batch_size: int = 256
    device: str = "cpu"
    quantizer: str = "linear"
    progress: bool = True
    model_kwargs: dict[str, Any] | None = None
    weights: str | None = None
    image_size: int | None = None
    unquantized_cost: str = "float_bit"
    calibration: str = "once"
    finetune_epochs: int = 0
    finetune_batch_size: int = 64
    reward_accuracy: str = "val"
    use_top5: bool = False
    preset: str | None = None

    def __post_init__(self) -> None:
        check_env_keywords({f.name: getattr(self, f.name) for f in fields(self)})
        given = {f.name: getattr(self, f.name) for f in fields(self)}
        resolved = apply_preset(self.preset, given, {f.name: f.default for f in fields(self)})
        for name, value in resolved.items():
            if value is not given[name]:
                object.__setattr__(self, name, value)
        check_float_bit(self.float_bit)
        if self.pin_first_last not in PIN_MODES:
            raise ValueError(f"pin_first_last must be True, False or 'wall', got {self.pin_first_last!r}")
        unquantized_cost_bit(self.unquantized_cost, self.float_bit)
        AccuracySettings(source=self.reward_accuracy, top5=bool(self.use_top5), calibration=self.calibration)
        lo, hi = (MIN_KMEANS_BIT, MAX_KMEANS_BIT) if self.is_kmeans else LINEAR_BIT_RANGE
        if not lo <= self.min_bit <= self.max_bit <= hi:
            raise ValueError(
                f"need {lo} <= min_bit <= max_bit <= {hi}, got min_bit={self.min_bit}, max_bit={self.max_bit}"
            )
        if self.enforcement not in ENFORCEMENTS:
            raise ValueError(f"unknown enforcement {self.enforcement!r}; expected one of {', '.join(ENFORCEMENTS)}")
        if self.reward not in REWARDS:
            raise ValueError(f"unknown reward {self.reward!r}; expected one of {', '.join(REWARDS)}")
        if self.is_kmeans and (self.reward != "haq" or self.latency_budget is not None):
            raise ValueError(
                "the k-means flow has HAQ's reward and a size (flash) budget only; got "
                f"reward={self.reward!r}, latency_budget={self.latency_budget!r}"
            )

    @property
    def is_kmeans(self) -> bool:
        """Whether this is HAQ's k-means weight-sharing flow."""
        return self.quantizer == KMEANS

    def setup_kwargs(self) -> dict[str, Any]:
        """The keywords of :func:`~haq_gym.search_setup.build_search_setup` (the k-means flow starts from linear)."""
        kwargs = {name: getattr(self, name) for name in SETUP_FIELDS}
        if self.is_kmeans:
            kwargs["quantizer"] = "linear"
        return kwargs

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
