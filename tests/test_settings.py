from __future__ import annotations

from pathlib import Path

import pytest

from service.settings import SettingsError, load_settings

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
