"""The per-algorithm hyperparameter files (``configs/<algo>.yml``), found wherever haq-gym is installed.

The top-level ``configs/`` folder of the repository ships inside the package as
``haq_gym/configs`` (a link in the source tree, copied as package data into wheels), so
the same files are read from a checkout, an editable install or a regular install, from any
working directory. A missing or unreadable file is an error: running an algorithm with
library defaults instead of HAQ's settings would silently change what is measured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

_PACKAGE_DIR = Path(__file__).resolve().parent


class ConfigError(ValueError):
    """A per-algorithm config file that is missing, unreadable or malformed."""


def config_dir() -> Path:
    """The folder holding ``<algo>.yml`` and ``hardware/``: inside the package, else the checkout's ``configs/``."""
    for candidate in (_PACKAGE_DIR / "configs", _PACKAGE_DIR.parent / "configs"):
        if candidate.is_dir():
            return candidate
    raise ConfigError(
        f"haq-gym's configs folder is missing (looked for {_PACKAGE_DIR / 'configs'} and "
        f"{_PACKAGE_DIR.parent / 'configs'}); reinstall haq-gym"
    )


def algo_config_path(algo: str) -> Path:
    return config_dir() / f"{algo}.yml"


def algo_defaults(algo: str, env_id: str) -> dict[str, Any]:
    """The hyperparameters of ``algo`` for ``env_id`` (its entry, else the file's ``default`` entry)."""
    path = algo_config_path(algo)
    try:
        table = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no config for algorithm {algo!r}: {path} does not exist") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read {path}: {err}") from None
    if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
        raise ConfigError(f"{path} should map env ids (or 'default') to hyperparameter mappings")
    if env_id not in table and "default" not in table:
        raise ConfigError(f"{path} has no entry for {env_id} and no 'default' entry")
    return dict(table[env_id] if env_id in table else table["default"])
