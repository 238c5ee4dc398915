"""Measuring accuracy: plain top-1 and the cached policy evaluator of the search."""

from haq_gym.evaluation.accuracy import top1_accuracy
from haq_gym.evaluation.policy_evaluator import EvalResult, FinetuneSettings, PolicyEvaluator

__all__ = ["EvalResult", "FinetuneSettings", "PolicyEvaluator", "top1_accuracy"]
