from __future__ import annotations

import base64
import re
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


# Production refuses weak or missing configuration (issue #9, item 10) -------------------

STRONG = {
    "LINKSYNC_ENV": "production",
    "SECRET_KEY": "Zq3v9Lr2Xw8Tn1Pm6Kd4Hs7Jb5Gc0Yf-Ua2Ee",
    "TOKEN_ENCRYPTION_KEYS": "Wn4yYbV1Z0cSl7rQz8kq3N2mVh9JtX5dPfGa6uLwEeI=",
    "API_KEYS": "Bk7Rt2Wq9Zx4Lm1Np8Vc3Hd6Js0Gf5Ya-Ub2Oi",
    "WEBHOOK_SECRET": "Hm3Pz8Qs1Vk6Xr9Lb4Nt7Wd2Jc5Fg0Ya_Uo1Ei",
    "CLOSE_CLIENT_ID": "oa2client_6yxwQ1bVf0Mx",
    "CLOSE_CLIENT_SECRET": "Tz8Kq3Wn1Xv6Lr9Pm4Hs7Jb2Gc5Yd0Fa-Ue2Ii",
    "SOURCE_URL": "https://api.scheduler.example.net/linksync",
    "SOURCE_TOKEN": "src_9Kq2Wx7Lm4Nv1Pb8",
    "PUBLIC_URL": "https://linksync.scheduler.example.net",
}


def production(tmp_path: Path, **overrides: object) -> object:
    values: dict[str, object] = {**STRONG, "INSTANCE_PATH": tmp_path, **overrides}
    return load_settings(**{k: v for k, v in values.items() if v is not None})


def refusal(tmp_path: Path, **overrides: object) -> str:
    with pytest.raises(SettingsError) as error:
        production(tmp_path, **overrides)
    assert len(error.value.problems) == 1, error.value.problems
    return error.value.problems[0]


def test_a_strong_production_configuration_starts(tmp_path: Path) -> None:
    settings = production(tmp_path)
    assert settings.secure_cookies  # type: ignore[attr-defined]


ZERO_KEY = base64.urlsafe_b64encode(bytes(32)).decode()
REPEATING_KEY = base64.urlsafe_b64encode(b"ab" * 16).decode()


@pytest.mark.parametrize(
    ("overrides", "variable", "reason"),
    [
        ({"SECRET_KEY": "short-but-random-Xq2"}, "SECRET_KEY", "shorter than 32"),
        ({"SECRET_KEY": "changeme" * 5}, "SECRET_KEY", "placeholder"),
        ({"SECRET_KEY": "my-Super-Secret-value-that-is-long-enough"}, "SECRET_KEY", "placeholder"),
        ({"SECRET_KEY": "a" * 40}, "SECRET_KEY", "trivially weak"),
        ({"SECRET_KEY": "01" * 20}, "SECRET_KEY", "trivially weak"),
        (
            {"WEBHOOK_SECRET": "xxxx-xxxx-xxxx-xxxx-xxxx-xxxx-xxxx-xxxx"},
            "WEBHOOK_SECRET",
            "placeholder",
        ),
        ({"WEBHOOK_SECRET": "test-webhook-secret"}, "WEBHOOK_SECRET", "placeholder"),
        ({"API_KEYS": STRONG["API_KEYS"] + ",short"}, "API_KEYS (key #2)", "shorter than 32"),
        ({"API_KEYS": STRONG["SECRET_KEY"]}, "API_KEYS", "must differ from SECRET_KEY"),
        (
            {"TOKEN_ENCRYPTION_KEYS": ZERO_KEY},
            "TOKEN_ENCRYPTION_KEYS",
            "the first key is trivially weak",
        ),
        (
            {"TOKEN_ENCRYPTION_KEYS": STRONG["TOKEN_ENCRYPTION_KEYS"] + "," + REPEATING_KEY},
            "TOKEN_ENCRYPTION_KEYS",
            "key #2 is trivially weak",
        ),
        ({"CLOSE_CLIENT_ID": None, "CLOSE_CLIENT_SECRET": None}, "CLOSE_CLIENT_ID", "sandbox"),
        ({"CLOSE_CLIENT_ID": "linksync-sandbox"}, "CLOSE_CLIENT_ID", "sandbox"),
        ({"CLOSE_CLIENT_SECRET": "sandbox-secret"}, "CLOSE_CLIENT_SECRET", "sandbox"),
        ({"SOURCE_URL": None}, "SOURCE_URL", "demo source"),
        ({"SOURCE_URL": "http://localhost:8200/"}, "SOURCE_URL", "demo source"),
        ({"SOURCE_TOKEN": "demo-source-token"}, "SOURCE_TOKEN", "demo"),
        ({"PUBLIC_URL": "http://linksync.example.net"}, "PUBLIC_URL", "https"),
        ({"PUBLIC_URL": None}, "PUBLIC_URL", "https"),
        (
            {"PUBLIC_URL": "http://linksync.example.net", "ALLOW_INSECURE_PUBLIC_URL": "true"},
            "ALLOW_INSECURE_PUBLIC_URL",
            "loopback",
        ),
    ],
)
def test_production_refuses_each_weakness_with_one_message_naming_it(
    tmp_path: Path, overrides: dict[str, object], variable: str, reason: str
) -> None:
    message = refusal(tmp_path, **overrides)
    assert message.startswith(variable) or f"{variable}" in message.split(":")[0], message
    assert reason in message, message
    for name, value in overrides.items():
        if name in ("SECRET_KEY", "WEBHOOK_SECRET", "API_KEYS", "TOKEN_ENCRYPTION_KEYS"):
            assert str(value) not in message  # secrets are never echoed


def test_the_env_example_secret_placeholders_are_refused(tmp_path: Path) -> None:
    example = (Path(__file__).resolve().parent.parent / ".env.example").read_text()
    values = dict(re.findall(r"^#?\s*(SECRET_KEY|API_KEYS|WEBHOOK_SECRET)=(\S+)$", example, re.M))
    assert set(values) == {"SECRET_KEY", "API_KEYS", "WEBHOOK_SECRET"}
    for name, value in values.items():
        assert name in refusal(tmp_path, **{name: value})


@pytest.mark.parametrize(
    "public_url", ["http://127.0.0.1:5000", "http://[::1]:5000", "http://localhost:5000"]
)
def test_insecure_public_url_is_allowed_explicitly_for_loopback_only(
    tmp_path: Path, public_url: str
) -> None:
    assert "PUBLIC_URL" in refusal(tmp_path, PUBLIC_URL=public_url)
    settings = production(tmp_path, PUBLIC_URL=public_url, ALLOW_INSECURE_PUBLIC_URL="true")
    # Over plain http a Secure cookie never comes back, so this test mode sends plain ones.
    assert settings.secure_cookies is False  # type: ignore[attr-defined]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(LINKSYNC_ENV="production", INSTANCE_PATH=tmp_path)
    named = " ".join(error.value.problems)
    for name in ("SECRET_KEY", "CLOSE_CLIENT_ID", "SOURCE_URL", "SOURCE_TOKEN", "PUBLIC_URL"):
        assert name in named
    assert len(error.value.problems) == 8


def test_dev_and_test_modes_keep_their_embedded_defaults(tmp_path: Path) -> None:
    settings = load_settings(LINKSYNC_ENV="test", INSTANCE_PATH=tmp_path, SECRET_KEY="short")
    assert settings.uses_close_sandbox and settings.SOURCE_URL == "http://127.0.0.1:8200"


@pytest.mark.parametrize(
    ("origins", "expected"),
    [
        ("https://App.Example.com/", ["https://app.example.com"]),
        ("https://bücher.example:443", ["https://xn--bcher-kva.example"]),
        ("http://[0::1]:3000", ["http://[::1]:3000"]),
        ("https://app.example.com/path", None),
        ("https://[zz]", None),
        ("ftp://files.example.com", None),
    ],
)
def test_return_url_origins_are_validated_and_normalised(
    tmp_path: Path, origins: str, expected: list[str] | None
) -> None:
    if expected is None:
        with pytest.raises(SettingsError, match="RETURN_URL_ALLOWED_ORIGINS"):
            load_settings(INSTANCE_PATH=tmp_path, RETURN_URL_ALLOWED_ORIGINS=origins)
    else:
        settings = load_settings(INSTANCE_PATH=tmp_path, RETURN_URL_ALLOWED_ORIGINS=origins)
        normalized = settings.RETURN_URL_ALLOWED_ORIGINS
        assert normalized == expected
