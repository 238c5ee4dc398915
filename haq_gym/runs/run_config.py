"""A search run's settings: what ``train_agent.py`` resolves from its flags and writes to ``config.yml``."""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

import yaml

from haq_gym.algo_configs import ConfigError
from haq_gym.algo_configs import algo_defaults as installed_defaults

DEFAULT_ENV = "HAQ-MobileNetV2-v0"
DEFAULT_ALGO = "haq-ddpg"


class UsageError(ValueError):
    """Bad user input (a flag, a config file); command lines report it in one line, without a traceback."""


@dataclass
class RunConfig:
    """One search run: algorithm, registered env id, seed, episode budget, env keywords, algorithm hyperparameters.

    :meth:`to_dict` is the layout of a run's ``config.yml`` (plus the version and command
    :func:`~haq_gym.runs.run_search` adds), and :meth:`from_dict` reads it back.
    """

    algo: str = DEFAULT_ALGO
    env: str = DEFAULT_ENV
    seed: int = 0
    n_episodes: int = 1
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    hyperparams: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from haq_gym.validation import check_int, check_seed

        try:
            check_seed(self.seed)
            check_int("--episodes", self.n_episodes, 1)
        except ValueError as err:
            raise UsageError(str(err)) from None

    def validate(self) -> None:
        """Refuse, in one line, any setting of the wrong type or out of range, without building anything.

        Checks the env id (``module:EnvId`` is resolved to the id by
        :func:`haq_gym.registration.resolve_env_id`), the env keywords (names, types, ranges:
        the envs' own checks, :func:`haq_gym.validation.check_env_kwargs`), the algorithm's hyperparameters
        (:func:`agents.registry.check_hyperparam_values`) and its action mode. Called before a
        run folder is created, so a refused run leaves nothing behind.
        """
        from agents.registry import check_action_mode, check_hyperparam_values, get_spec
        from haq_gym.registration import resolve_env_id
        from haq_gym.validation import check_env_kwargs

        try:
            self.env = resolve_env_id(self.env)
        except ValueError as err:
            raise UsageError(str(err)) from None
        check_hyperparam_values(self.algo, self.hyperparams)
        check_action_mode(self.algo, self.env_kwargs.get("action_mode", get_spec(self.algo).action_modes[0]))
        check_env_kwargs(self.env, self.env_kwargs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """A config from a mapping with the :meth:`to_dict` keys (others, like ``command``, are ignored)."""
        return cls(
            algo=data["algo"],
            env=data["env"],
            seed=data["seed"],
            n_episodes=data["n_episodes"],
            env_kwargs=dict(data.get("env_kwargs") or {}),
            hyperparams=dict(data.get("hyperparams") or {}),
        )


def parse_key_values(items: list[str] | None, flag: str) -> dict[str, Any]:
    """``["a=1", "b:none"]`` -> ``{"a": 1, "b": None}``.

    ``key=value`` or the zoo's ``key:value``, split at whichever comes first (so
    ``model=torchvision:resnet50`` and ``model:torchvision:resnet50`` both work); values are
    parsed as YAML scalars; ``-`` in keys becomes ``_``.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        cut = min((i for i in (item.find("="), item.find(":")) if i >= 0), default=-1)
        key, value = (item[:cut], item[cut + 1 :]) if cut >= 0 else (item, "")
        if cut < 0 or not key:
            raise UsageError(f"{flag} expects key=value (or key:value) pairs, got {item!r}")
        out[key.replace("-", "_")] = yaml.safe_load(value) if value.lower() not in ("none", "null") else None
    return out


def yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error in one line: what is wrong and where (PyYAML's own text spans several lines)."""
    mark = getattr(err, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{getattr(err, 'problem', None) or type(err).__name__}{where}"


def algo_defaults(algo: str, env_id: str) -> dict[str, Any]:
    """The algorithm's hyperparameters for ``env_id`` from its installed ``configs/<algo>.yml`` (zoo convention)."""
    try:
        return installed_defaults(algo, env_id)
    except ConfigError as err:
        raise UsageError(str(err)) from None


def command_line() -> str:
    """This process's command line, for the records, with passwords in URLs (``--storage``) replaced by ``***``."""
    args = sys.argv[1:]
    if any("://" in arg for arg in args):  # only a storage URL can hold a password; Optuna loads only then
        from agents.tuning.storage import redact

        args = [redact(arg) for arg in args]
    return shlex.join([os.path.basename(sys.argv[0])] + args)
