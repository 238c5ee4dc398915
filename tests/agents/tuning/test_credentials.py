"""Credentials in storage URLs are never written: each form libpq and SQLAlchemy accept, in every record and message."""

from __future__ import annotations

import sys

import pytest

import train_agent
from agents.tuning.optimize import TuningSettings, _marker
from agents.tuning.storage import StorageError, open_storage, redact, scrub, url_secrets

# (form, url, the secret it holds). libpq takes a password in the user info or as the
# ``password`` / ``sslpassword`` connection parameters, which SQLAlchemy passes on from the query.
FORMS = [
    ("user info", "postgresql://tuner:s3cr3t@db:5432/optuna", "s3cr3t"),
    ("user info, psycopg2 driver", "postgresql+psycopg2://tuner:s3cr3t@db/optuna", "s3cr3t"),
    ("user info, several hosts", "postgresql://tuner:s3cr3t@db1:5432,db2:5433/optuna", "s3cr3t"),
    ("user info, unparsable port", "postgresql://tuner:s3cr3t@db:port/optuna", "s3cr3t"),
    ("percent-encoded user info", "postgresql://tuner:s3%40cr3t@db/optuna", "s3@cr3t"),
    ("query password", "postgresql://tuner@db/optuna?password=s3cr3t", "s3cr3t"),
    (
        "query password among others",
        "postgresql://tuner@db/optuna?sslmode=require&password=s3cr3t&connect_timeout=5",
        "s3cr3t",
    ),
    ("query sslpassword", "postgresql://tuner@db/optuna?sslmode=verify-full&sslpassword=s3cr3t", "s3cr3t"),
    ("percent-encoded query key", "postgresql://tuner@db/optuna?pass%77ord=s3cr3t", "s3cr3t"),
    ("both places", "postgresql://tuner:s3cr3t@db/optuna?password=0th3r", "0th3r"),
]


@pytest.mark.parametrize("form,url,secret", FORMS, ids=[f[0] for f in FORMS])
def test_redact_removes_the_secret(form, url, secret) -> None:
    shown = redact(url)
    assert secret not in shown and "s3cr3t" not in shown and "***" in shown
    assert "tuner" in shown and "optuna" in shown  # the rest stays readable
    assert secret in url_secrets(url)


@pytest.mark.parametrize("form,url,secret", FORMS, ids=[f[0] for f in FORMS])
def test_recorded_command_line_hides_the_secret(monkeypatch, form, url, secret) -> None:
    """What every trial's config.yml and the study's ``command`` attribute record."""
    monkeypatch.setattr(sys, "argv", ["train_agent.py", "--optimize", "--storage", url])
    recorded = train_agent.command_line()
    assert secret not in recorded and "s3cr3t" not in recorded and "--storage" in recorded


@pytest.mark.parametrize("form,url,secret", FORMS, ids=[f[0] for f in FORMS])
def test_tuning_yml_hides_the_secret(tmp_path, form, url, secret) -> None:
    settings = TuningSettings(
        algo="haq-ddpg",
        env_id="HAQ-MobileNetV2-v0",
        env_kwargs={},
        n_episodes=2,
        base_hyperparams={},
        fixed_hyperparams={},
        output=str(tmp_path),
        storage=url,
    )
    assert secret not in str(_marker(settings)) and "s3cr3t" not in str(_marker(settings))


@pytest.mark.parametrize("form,url,secret", FORMS, ids=[f[0] for f in FORMS])
def test_error_messages_are_scrubbed(form, url, secret) -> None:
    message = f"could not parse {url!r}: bad value {secret!r}"
    assert secret not in scrub(message, url) and "s3cr3t" not in scrub(message, url)


def test_storage_errors_never_show_the_secret() -> None:
    """SQLAlchemy's own parse error quotes the whole URL; the message shown is scrubbed."""
    pytest.importorskip("psycopg")
    for url in (
        "postgresql://tuner:s3cr3t@db:port/optuna",
        "postgresql://tuner@127.0.0.1:1/optuna?password=s3cr3t",
        "postgresql://tuner@127.0.0.1:1/optuna?sslpassword=s3cr3t&connect_timeout=2",
    ):
        with pytest.raises(StorageError) as err:
            open_storage(url)
        assert "s3cr3t" not in str(err.value)


def test_environment_passwords_are_never_recorded(monkeypatch, tmp_path) -> None:
    """The PGPASSWORD style: libpq reads the secret from the environment; nothing of haq-gym copies it."""
    monkeypatch.setenv("PGPASSWORD", "s3cr3t")
    monkeypatch.setenv("PGSSLPASSWORD", "s3cr3t")
    url = "postgresql://tuner@db/optuna"
    monkeypatch.setattr(sys, "argv", ["train_agent.py", "--optimize", "--storage", url])
    settings = TuningSettings(
        algo="haq-ddpg",
        env_id="HAQ-MobileNetV2-v0",
        env_kwargs={},
        n_episodes=2,
        base_hyperparams={},
        fixed_hyperparams={},
        output=str(tmp_path),
        storage=url,
        command=train_agent.command_line(),
    )
    records = [settings.command, str(_marker(settings)), str(settings.study_record()), redact(url)]
    assert all("s3cr3t" not in r for r in records)
    assert url_secrets(url) == []
