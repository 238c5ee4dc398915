"""Measuring accuracy: plain top-1 and the cached policy evaluator of the search."""

from haq_gym.evaluation.accuracy import top1_accuracy
from haq_gym.evaluation.policy_evaluator import AccuracySettings, EvalResult, FinetuneSettings, PolicyEvaluator

__all__ = ["AccuracySettings", "EvalResult", "FinetuneSettings", "PolicyEvaluator", "top1_accuracy"]
