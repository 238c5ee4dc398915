"""Model definitions, float pretraining and checkpoints."""

from haq_gym.models.checkpoint import cache_dir, ensure_default_checkpoint, load_checkpoint, save_checkpoint
from haq_gym.models.pretrain import FloatRecipe, train_float
from haq_gym.models.registry import build_model, model_names

__all__ = [
    "FloatRecipe",
    "build_model",
    "cache_dir",
    "ensure_default_checkpoint",
    "load_checkpoint",
    "model_names",
    "save_checkpoint",
    "train_float",
]
