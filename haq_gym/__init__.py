"""haq-gym: hardware-aware mixed-precision quantization search (HAQ) as Gymnasium environments.

Importing the package registers the environment ids (see :mod:`haq_gym.registration`).
"""

from haq_gym.registration import ENV_IDS, register_envs

__version__ = "0.1.0"

register_envs()

__all__ = ["ENV_IDS", "__version__", "register_envs"]
