"""haq-gym: hardware-aware mixed-precision quantization search (HAQ) as Gymnasium environments.

Importing the package registers the environment ids (see :mod:`haq_gym.registration`).
``haq_gym.search``, ``haq_gym.finetune_policy`` and ``haq_gym.export_policy`` are the Python
API of the three commands (:mod:`haq_gym.api`).
"""

from haq_gym.api import ExportResult, FinetuneResult, export_policy, finetune_policy, search
from haq_gym.registration import ENV_IDS, register_envs

__version__ = "0.1.0"

register_envs()

__all__ = [
    "ENV_IDS",
    "ExportResult",
    "FinetuneResult",
    "__version__",
    "export_policy",
    "finetune_policy",
    "register_envs",
    "search",
]
