from __future__ import annotations

from pathlib import Path

import pytest

from service.settings import (
    SettingsError,
    check_variable_names,
    load_settings,
    settings_error_line,
    unknown_variable_problems,
)

pytestmark = pytest.mark.unit


def test_production_without_secrets_names_every_missing_variable(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(LINKSYNC_ENV="production", INSTANCE_PATH=tmp_path)
    for name in ("SECRET_KEY", "TOKEN_ENCRYPTION_KEYS", "API_KEYS", "WEBHOOK_SECRET"):
        assert name in str(error.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SYNC_INTERVAL_SECONDS", "soon"),
        ("SYNC_INTERVAL_SECONDS", "1"),
        ("PUBLIC_URL", "not a url"),
        ("TOKEN_ENCRYPTION_KEYS", "not-a-fernet-key"),
        ("LINKSYNC_ENV", "staging"),
        ("LOG_FORMAT", "xml"),
    ],
)
def test_invalid_values_name_the_variable(tmp_path: Path, name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load_settings(INSTANCE_PATH=tmp_path, **{name: value})


def test_dev_mode_generates_and_keeps_local_secrets(tmp_path: Path) -> None:
    first = load_settings(INSTANCE_PATH=tmp_path)
    second = load_settings(INSTANCE_PATH=tmp_path)
    assert first.SECRET_KEY and first.SECRET_KEY == second.SECRET_KEY
    assert first.TOKEN_ENCRYPTION_KEYS == second.TOKEN_ENCRYPTION_KEYS
    assert (
        first.uses_close_sandbox
        and first.close_url("CLOSE_TOKEN_URL") == "http://127.0.0.1:8100/oauth2/token/"
    )


def test_real_close_urls_with_a_client_id(tmp_path: Path) -> None:
    settings = load_settings(
        INSTANCE_PATH=tmp_path, CLOSE_CLIENT_ID="id", CLOSE_CLIENT_SECRET="secret"
    )
    assert settings.close_url("CLOSE_AUTHORIZE_URL") == "https://app.close.com/oauth2/authorize/"
    assert settings.close_url("CLOSE_API_URL") == "https://api.close.com/api/v1"
    with pytest.raises(SettingsError, match="together"):
        load_settings(INSTANCE_PATH=tmp_path, CLOSE_CLIENT_ID="id")


# Misspelled variables -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typo", "intended"),
    [
        ("SYNC_INTERVAL_SECOND", "SYNC_INTERVAL_SECONDS"),
        ("DATABSE_URL", "DATABASE_URL"),
        ("database_url", "DATABASE_URL"),
        ("WEBHOOK_SECRETS", "WEBHOOK_SECRET"),
    ],
)
def test_a_misspelled_name_in_dotenv_names_it_and_the_intended_one(
    tmp_path: Path, typo: str, intended: str
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(f"# a comment\nPUBLIC_URL=http://127.0.0.1:5000\n{typo}=900\n")
    with pytest.raises(SettingsError) as error:
        check_variable_names(env_file, {})
    assert str(error.value) == f"{typo}: unknown variable in .env; did you mean {intended}?"


def test_an_unknown_name_in_dotenv_is_reported_even_without_a_near_miss(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "POSTGRES_PASSWORD=x\nGUNICORN_WORKERS=2\nPROMETHEUS_MULTIPROC_DIR=/tmp/m\n"
    )
    with pytest.raises(SettingsError) as error:
        check_variable_names(env_file, {})
    # gunicorn's and Prometheus's variables belong in a deployment's .env too.
    assert (
        str(error.value)
        == "POSTGRES_PASSWORD: unknown variable in .env; see .env.example for the settings"
    )


def test_only_environment_variables_that_look_like_ours_are_judged(tmp_path: Path) -> None:
    environ = {
        "PATH": "/usr/bin",
        "HOSTNAME": "box",
        "SOURCE_DATE_EPOCH": "0",
        "TEST_REDIS_URL": "redis://x",
        "GUNICORN_BIND": "0.0.0.0:5000",
        "SYNC_INTERVAL_SECONDS": "900",
    }
    assert unknown_variable_problems({}, environ) == []
    environ |= {"SYNC_INTERVAL_SECOND": "60", "LINKSYNC_DEBUG": "1"}
    assert unknown_variable_problems({}, environ) == [
        "SYNC_INTERVAL_SECOND: unknown variable in the environment; "
        "did you mean SYNC_INTERVAL_SECONDS?",
        "LINKSYNC_DEBUG: unknown variable in the environment; not a LinkSync setting",
    ]


def test_load_settings_stops_on_a_dotenv_typo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # .env is read from the working directory
    (tmp_path / ".env").write_text("SYNC_INTERVAL_SECOND=60\n")
    with pytest.raises(SettingsError, match="did you mean SYNC_INTERVAL_SECONDS"):
        load_settings(INSTANCE_PATH=tmp_path)


def test_the_error_line_names_the_variable_and_drops_pydantics_prefix(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(INSTANCE_PATH=tmp_path, LOG_FORMAT="xml")
    assert settings_error_line(error.value) == "linksync: LOG_FORMAT: must be 'json' or 'console'"
