"""LSQ quantization-aware finetuning of a searched policy (``python -m haq_gym.finetune``)."""

from haq_gym.finetune.checkpoint import (
    QATCheckpoint,
    build_quantized_model,
    load_qat_checkpoint,
    quantize_model,
    save_qat_checkpoint,
)
from haq_gym.finetune.recipe import QATRecipe, parameter_groups, weight_decay_factor
from haq_gym.finetune.trainer import TrainingDiverged, TrainResult, train_quantized

__all__ = [
    "QATCheckpoint",
    "QATRecipe",
    "TrainResult",
    "TrainingDiverged",
    "build_quantized_model",
    "load_qat_checkpoint",
    "parameter_groups",
    "quantize_model",
    "save_qat_checkpoint",
    "train_quantized",
    "weight_decay_factor",
]
