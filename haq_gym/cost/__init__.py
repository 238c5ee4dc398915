"""Cost models: layer facts, latency lookup tables, flash size, budgets and their enforcement."""

from haq_gym.cost.accelerator_model import BitSerialAccelerator
from haq_gym.cost.budget import Budget
from haq_gym.cost.cost_model import CostModel, Costs
from haq_gym.cost.enforcement import ENFORCEMENTS, enforce_budget
from haq_gym.cost.latency_table import load_table, save_table, validate_table
from haq_gym.cost.layer_info import LayerInfo, measure_layers

__all__ = [
    "ENFORCEMENTS",
    "BitSerialAccelerator",
    "Budget",
    "CostModel",
    "Costs",
    "LayerInfo",
    "enforce_budget",
    "load_table",
    "measure_layers",
    "save_table",
    "validate_table",
]
