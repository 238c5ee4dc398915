"""Gymnasium environment classes of haq-gym (registered by ``import haq_gym``)."""

from envs.kmeans_quantize_env import KMeansQuantizeEnv
from envs.linear_quantize_env import LinearQuantizeEnv

__all__ = ["KMeansQuantizeEnv", "LinearQuantizeEnv"]
