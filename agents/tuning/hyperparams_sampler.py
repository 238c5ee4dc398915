"""Optuna search spaces over the search agents' own hyperparameters: one ``sample_<algo>`` per algorithm.

Each function takes an Optuna trial and the :class:`SearchProblem` being tuned on and
returns hyperparameters that are set on top of the algorithm's config
(``configs/<algo>.yml``), like rl-baselines3-zoo's ``hyperparams_opt.py``. Every suggestion
is named after the config key it sets, so ``--hyperparams key=value`` can take a key out of
the search (:class:`FixedParams`) and the best trial's parameters paste straight into a
config.

Ranges are written for HAQ's problem, not copied from the zoo's Atari/MuJoCo spaces: one
reward per episode (the validation accuracy of the whole policy), episodes of
``episode_length`` steps (102 decisions for MobileNetV2) and budgets of tens to hundreds
of episodes. Step-valued SB3 knobs (rollout length, replay size, warm-up) are therefore
sampled in whole episodes and converted to steps. Knobs the configs fix for a structural
reason stay fixed: ``gamma``/``gae_lambda`` = 1 for on-policy agents (one terminal reward
over a fixed horizon), HAQ's final-reward relabelling with ``gamma = 0`` for off-policy
ones, ``train_freq``/``gradient_steps`` learning once per episode (see the configs'
comments).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class Suggester(Protocol):
    """The part of :class:`optuna.trial.Trial` the sampling functions use."""

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float: ...

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...


@dataclass(frozen=True)
class SearchProblem:
    """What a search space depends on: the per-run evaluation budget and the env's shape."""

    episodes: int  # evaluation budget of one search run (episodes = policy evaluations)
    episode_length: int  # env steps (decisions) per episode
    min_bit: int
    max_bit: int


class FixedParams:
    """A trial in which the names of ``fixed`` are not searched: suggesting one returns its fixed value.

    The fixed value is not recorded as a trial parameter, so it neither enters the
    sampler's model nor the parameter importances.
    """

    def __init__(self, trial: Suggester, fixed: Mapping[str, Any]) -> None:
        self.trial = trial
        self.fixed = dict(fixed)

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        if name in self.fixed:
            return self.fixed[name]
        return self.trial.suggest_float(name, low, high, step=step, log=log)

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        if name in self.fixed:
            return self.fixed[name]
        return self.trial.suggest_int(name, low, high, step=step, log=log)

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        if name in self.fixed:
            return self.fixed[name]
        return self.trial.suggest_categorical(name, choices)


def _warmup_episodes_max(problem: SearchProblem) -> int:
    """Longest warm-up worth trying: a quarter of the budget (the rest must exploit what was learned)."""
    return max(1, problem.episodes // 4)


def sample_haq_ddpg(trial: Suggester, problem: SearchProblem) -> dict[str, Any]:
    """HAQ's DDPG: the knobs HAQ's paper and code set by hand (defaults in brackets are HAQ's)."""
    return {
        # Adam rates one decade either side of HAQ's 1e-4 (actor) and 1e-3 (critic).
        "lr_actor": trial.suggest_float("lr_actor", 1e-5, 1e-3, log=True),
        "lr_critic": trial.suggest_float("lr_critic", 1e-4, 1e-2, log=True),
        # Std of the truncated-normal noise on the [0, 1] action [0.5]. One bit-width bin is 1/7 ~ 0.14
        # wide for 2..8 bits: below 0.1 the noise rarely changes a bit width, above 1 it is nearly uniform.
        "init_delta": trial.suggest_float("init_delta", 0.1, 1.0),
        # Per-episode decay of that std [0.99]. 0.95 shrinks it 20x within 60 episodes (exploration over
        # early in a 120-episode search); 1.0 keeps it constant.
        "delta_decay": trial.suggest_float("delta_decay", 0.95, 1.0),
        # Episodes of uniform-random actions before learning [20], up to a quarter of the budget.
        "warmup": trial.suggest_int("warmup", 1, _warmup_episodes_max(problem)),
        # Replay capacity in episodes [128]: 16 forgets within a short search, 256 never forgets in 600.
        "rmsize": trial.suggest_int("rmsize", 16, 256, log=True),
        # Target-network Polyak rate [0.01], a decade either side.
        "tau": trial.suggest_float("tau", 1e-3, 1e-1, log=True),
    }


def _episodes_in_steps(trial: Suggester, name: str, episodes: Sequence[int], problem: SearchProblem) -> int:
    """A step count chosen among whole numbers of episodes (a rollout or warm-up never cuts an episode)."""
    return trial.suggest_categorical(name, [k * problem.episode_length for k in episodes])


def _off_policy(trial: Suggester, problem: SearchProblem) -> dict[str, Any]:
    """Shared by SAC, TD3, DDPG and TQC (with relabelling, the configs' HAQ-style setting)."""
    length = problem.episode_length
    return {
        # SB3's defaults are 3e-4 (SAC, TQC) and 1e-3 (TD3, DDPG): a decade around both.
        "learning_rate": trial.suggest_float("learning_rate", 1e-5, 3e-3, log=True),
        # HAQ's 64 is about half an episode of transitions; 32..256 is a quarter to 2.5 episodes.
        "batch_size": trial.suggest_categorical("batch_size", [32, 64, 128, 256]),
        "tau": trial.suggest_float("tau", 1e-3, 1e-1, log=True),
        # Replay capacity: 16 to 256 episodes of transitions, as for HAQ's rmsize.
        "buffer_size": trial.suggest_int("buffer_size", 16 * length, 256 * length, log=True),
        # Random-action warm-up in whole episodes (relabelling needs at least one), up to a quarter of the budget.
        "learning_starts": trial.suggest_int(
            "learning_starts", length, _warmup_episodes_max(problem) * length, step=length
        ),
    }


def sample_sac(trial: Suggester, problem: SearchProblem) -> dict[str, Any]:
    """SAC: the off-policy knobs; the entropy temperature stays SB3's automatic one."""
    return _off_policy(trial, problem)


def sample_tqc(trial: Suggester, problem: SearchProblem) -> dict[str, Any]:
    """TQC: SAC's knobs plus how many of each critic's 25 quantiles to drop (sb3-contrib's default 2)."""
    return {
        **_off_policy(trial, problem),
        "top_quantiles_to_drop_per_net": trial.suggest_int("top_quantiles_to_drop_per_net", 0, 5),
    }


def sample_td3(trial: Suggester, problem: SearchProblem) -> dict[str, Any]:
    """TD3 and DDPG: the off-policy knobs plus the Gaussian exploration noise."""
    return {
        **_off_policy(trial, problem),
        # Std on SB3's [-1, 1] action scale (half of it on the env's [0, 1]): 0.05 is a third of a
        # bit-width bin, 0.6 several bins (the configs use 0.3, about one bin).
        "action_noise": trial.suggest_float("action_noise", 0.05, 0.6, log=True),
    }


def _on_policy_common(trial: Suggester) -> dict[str, Any]:
    return {
        # SB3's defaults (3e-4 PPO, 7e-4 A2C) sit inside a decade-wide log range.
        "learning_rate": trial.suggest_float("learning_rate", 1e-5, 3e-3, log=True),
        # Entropy bonus over the 7 bit widths: from negligible to strong (the configs use 0.01).
        "ent_coef": trial.suggest_float("ent_coef", 1e-4, 0.1, log=True),
    }


def _minibatch(trial: Suggester, problem: SearchProblem) -> int:
    """Half, one or two episodes of steps: each divides a rollout of 2, 4 or 8 episodes (no truncated minibatch)."""
    length = problem.episode_length
    return trial.suggest_categorical("batch_size", [max(2, length // 2), length, 2 * length])


def sample_ppo(trial: Suggester, problem: SearchProblem) -> dict[str, Any]:
    """PPO and MaskablePPO: rollout length in episodes, minibatch size, epochs, clipping."""
    return {
        **_on_policy_common(trial),
        # 2..8 whole episodes per rollout (the configs use 5): more episodes per update compare more final
        # rewards but update less often (15 updates of 8 in a 120-episode search, 60 of 2).
        "n_steps": _episodes_in_steps(trial, "n_steps", [2, 4, 8], problem),
        "batch_size": _minibatch(trial, problem),
        "n_epochs": trial.suggest_categorical("n_epochs", [5, 10, 20]),
        "clip_range": trial.suggest_categorical("clip_range", [0.1, 0.2, 0.3]),
    }


def sample_a2c(trial: Suggester, problem: SearchProblem) -> dict[str, Any]:
    """A2C: one update per 1, 2 or 4 whole episodes (the config uses 1), rate and entropy bonus."""
    return {**_on_policy_common(trial), "n_steps": _episodes_in_steps(trial, "n_steps", [1, 2, 4], problem)}


def sample_trpo(trial: Suggester, problem: SearchProblem) -> dict[str, Any]:
    """TRPO: rollout length, value-function minibatch and rate, and the trust-region size."""
    return {
        "n_steps": _episodes_in_steps(trial, "n_steps", [2, 4, 8], problem),
        "batch_size": _minibatch(trial, problem),
        # Only the value function uses the rate (the policy step is set by target_kl): SB3's 1e-3 in a decade.
        "learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True),
        # KL trust region per policy step, SB3's 0.01 in the middle of a log range.
        "target_kl": trial.suggest_float("target_kl", 1e-3, 0.1, log=True),
    }


def sample_dqn(trial: Suggester, problem: SearchProblem) -> dict[str, Any]:
    """DQN: rate, replay, warm-up (in episodes) and the epsilon schedule."""
    length = problem.episode_length
    return {
        "learning_rate": trial.suggest_float("learning_rate", 1e-5, 3e-3, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [32, 64, 128, 256]),
        "buffer_size": trial.suggest_int("buffer_size", 16 * length, 256 * length, log=True),
        "learning_starts": trial.suggest_int(
            "learning_starts", length, _warmup_episodes_max(problem) * length, step=length
        ),
        # Share of the budget over which epsilon falls to its final value (the config: half of it).
        "exploration_fraction": trial.suggest_float("exploration_fraction", 0.1, 0.8),
        # Final epsilon: from 1 random decision in 100 to 1 in 5 (the config: 0.05).
        "exploration_final_eps": trial.suggest_float("exploration_final_eps", 0.01, 0.2, log=True),
    }


def sample_ars(trial: Suggester, problem: SearchProblem) -> dict[str, Any]:
    """ARS: directions per update, their size and the step size."""
    return {
        # 2 * n_delta episodes per update: 4 to 32 (the config's 4 gives 8); more directions, fewer updates.
        "n_delta": trial.suggest_int("n_delta", 2, 16, log=True),
        # Perturbation std on the [0, 1] action: a sixth of a bit-width bin to several bins (config 0.15).
        "delta_std": trial.suggest_float("delta_std", 0.02, 0.5, log=True),
        # ARS's step size, SB3's 0.02 inside a log range.
        "learning_rate": trial.suggest_float("learning_rate", 1e-3, 0.2, log=True),
    }


def _startup_trials(trial: Suggester, problem: SearchProblem) -> int:
    """Random trials before a model-based sampler takes over: 2 up to a quarter of the budget (Optuna's 10)."""
    return trial.suggest_int("n_startup_trials", min(2, _warmup_episodes_max(problem)), _warmup_episodes_max(problem))


def sample_optuna_tpe(trial: Suggester, problem: SearchProblem) -> dict[str, Any]:
    """TPE over the bits: its random start and how many candidates it scores per proposal (Optuna's 24)."""
    return {
        "n_startup_trials": _startup_trials(trial, problem),
        "n_ei_candidates": trial.suggest_int("n_ei_candidates", 8, 128, log=True),
    }


def sample_optuna_gp(trial: Suggester, problem: SearchProblem) -> dict[str, Any]:
    """GP Bayesian optimisation over the bits: only the length of its random start."""
    return {"n_startup_trials": _startup_trials(trial, problem)}


def sample_optuna_cmaes(trial: Suggester, problem: SearchProblem) -> dict[str, Any]:
    """CMA-ES over the bits: population size and the integer margin (``sigma0`` is deprecated in Optuna 4.9+)."""
    return {
        # CMA-ES needs at least 4; its default for 102 dimensions is 17; 32 leaves few generations in 120 episodes.
        "population_size": trial.suggest_int("population_size", 4, 32, log=True),
        # With margin (Hamano et al. 2022) integer dimensions cannot freeze; without it is plain CMA-ES.
        "with_margin": trial.suggest_categorical("with_margin", [True, False]),
    }


def sample_optuna_nsga2(trial: Suggester, problem: SearchProblem) -> dict[str, Any]:
    """NSGA-II over the bits: population (generations = budget / population) and the crossover."""
    return {
        # 8 (15 generations in 120 episodes) to 64 (Optuna's default 50 lies inside).
        "population_size": trial.suggest_int("population_size", 8, 64, log=True),
        "crossover_prob": trial.suggest_float("crossover_prob", 0.5, 1.0),
        "swapping_prob": trial.suggest_float("swapping_prob", 0.1, 0.5),
    }


def sample_greedy_sensitivity(trial: Suggester, problem: SearchProblem) -> dict[str, Any]:
    """Greedy sensitivity: the width a probe lowers a decision to (any width below max_bit)."""
    return {"probe_bits": trial.suggest_int("probe_bits", problem.min_bit, max(problem.min_bit, problem.max_bit - 1))}


SamplerFn = Callable[[Suggester, SearchProblem], dict[str, Any]]

HYPERPARAMS_SAMPLER: dict[str, SamplerFn] = {
    "haq-ddpg": sample_haq_ddpg,
    "sac": sample_sac,
    "tqc": sample_tqc,
    "td3": sample_td3,
    "ddpg": sample_td3,
    "ppo": sample_ppo,
    "maskable-ppo": sample_ppo,
    "a2c": sample_a2c,
    "trpo": sample_trpo,
    "dqn": sample_dqn,
    "ars": sample_ars,
    "optuna-tpe": sample_optuna_tpe,
    "optuna-gp": sample_optuna_gp,
    "optuna-cmaes": sample_optuna_cmaes,
    "optuna-nsga2": sample_optuna_nsga2,
    "greedy-sensitivity": sample_greedy_sensitivity,
}

# Registered algorithms that take no hyperparameters at all.
NOTHING_TO_TUNE = frozenset({"random", "uniform"})


def get_hyperparams_sampler(algo: str) -> SamplerFn:
    """The sampling function of ``algo``; a ValueError says why when there is none."""
    if algo in HYPERPARAMS_SAMPLER:
        return HYPERPARAMS_SAMPLER[algo]
    tunable = ", ".join(sorted(HYPERPARAMS_SAMPLER))
    if algo in NOTHING_TO_TUNE:
        raise ValueError(f"{algo} has no hyperparameters, so there is nothing to tune; --optimize works with {tunable}")
    raise ValueError(f"no hyperparameter search space for algorithm {algo!r}; --optimize works with {tunable}")
