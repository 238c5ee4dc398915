"""The policy problem: what a search optimises, shared by the envs (MDP views) and the black-box strategies.

A :class:`ProblemConfig` names everything a search problem needs (model, data, costs,
budget, enforcement, reward); :func:`build_problem` turns it into a :class:`PolicyProblem`
(or its k-means flow, :class:`KMeansProblem`) whose :meth:`~PolicyProblem.evaluate`
answers one :class:`Outcome` per policy and tells its observers (the run recorder).
"""

from haq_gym.problem.config import ProblemConfig
from haq_gym.problem.kmeans_problem import KMeansProblem
from haq_gym.problem.outcome import Outcome
from haq_gym.problem.policy_problem import Observer, PolicyProblem, build_problem

__all__ = ["KMeansProblem", "Observer", "Outcome", "PolicyProblem", "ProblemConfig", "build_problem"]
