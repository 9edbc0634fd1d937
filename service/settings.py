"""Typed settings, read once from the environment (and `.env`) and validated at start-up.

Every variable of the contract in product.md is a field here under its exact name. In dev mode
(`LINKSYNC_ENV=dev`, the default) missing secrets get safe local values that are generated once
and kept under `instance/`, so a restart does not invalidate stored tokens; in production a
missing secret stops the process with a message naming the variable.
"""

from __future__ import annotations

import base64
import difflib
import ipaddress
import logging
import os
import re
import secrets
import sys
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, NoReturn
from urllib.parse import urlsplit

import idna
from cryptography.fernet import Fernet
from dotenv import dotenv_values
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

log = logging.getLogger(__name__)

CLOSE_PRODUCTION = {
    "CLOSE_AUTHORIZE_URL": "https://app.close.com/oauth2/authorize/",
    "CLOSE_TOKEN_URL": "https://api.close.com/oauth2/token/",
    "CLOSE_REVOKE_URL": "https://api.close.com/oauth2/revoke/",
    "CLOSE_API_URL": "https://api.close.com/api/v1",
}
SANDBOX_CLIENT_ID = "linksync-sandbox"
SANDBOX_CLIENT_SECRET = "sandbox-secret"  # noqa: S105 - the sandbox's public demo client
DEMO_SOURCE_TOKEN = "demo-source-token"  # noqa: S105 - the demo source's public token
REQUIRED_OUTSIDE_DEV = ("SECRET_KEY", "TOKEN_ENCRYPTION_KEYS", "API_KEYS", "WEBHOOK_SECRET")


class Environment(StrEnum):
    DEV = "dev"
    TEST = "test"
    PRODUCTION = "production"


class SettingsError(Exception):
    """A configuration value is missing or invalid; the message names the variable."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]


def _split_csv(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list | tuple):
        return [str(v).strip() for v in value if str(v).strip()]
    raise ValueError("expected a comma-separated list")


CsvList = Annotated[list[str], NoDecode]

_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _ascii_host(host: str) -> str:
    """A DNS host name in its ASCII (punycode, lowercase) form; ValueError when malformed."""
    if not host.isascii():
        try:
            host = idna.encode(host, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError) as exc:
            raise ValueError("has a malformed international host name") from exc
    host = host.lower()
    labels = host.split(".")
    if len(host) > 253 or not all(_HOST_LABEL.match(label) for label in labels):
        raise ValueError("has a malformed host name")
    for label in labels:
        if label.startswith("xn--"):
            try:
                idna.decode(label)
            except (idna.IDNAError, UnicodeError) as exc:
                raise ValueError("has a malformed international host name") from exc
    return host


def normalized_origin(url: str) -> str:
    """The origin of an absolute http(s) URL in one canonical spelling (lowercase scheme and
    host, IDN as punycode, IPv6 compressed in brackets, no default port), so that two spellings
    of one origin compare equal. ValueError, with a message fit to follow the URL's name, when
    the URL is not an absolute http(s) URL with a well-formed host."""
    try:
        parts = urlsplit(url)
        port = parts.port  # parsed lazily; raises for "abc" or 99999
    except ValueError as exc:
        raise ValueError("is not a well-formed URL (host or port)") from exc
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError("must be an absolute http(s) URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not contain a user name or password")
    if parts.netloc.rpartition("@")[2].startswith("["):
        try:
            address = ipaddress.IPv6Address(parts.hostname)
        except ValueError as exc:
            raise ValueError("has a malformed IPv6 address") from exc
        if address.scope_id:
            raise ValueError("must not have an IPv6 zone")
        host = f"[{address.compressed}]"
    else:
        host = _ascii_host(parts.hostname)
    if port is not None and port != _DEFAULT_PORTS[parts.scheme]:
        host = f"{host}:{port}"
    return f"{parts.scheme}://{host}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=True
    )

    LINKSYNC_ENV: Environment = Environment.DEV
    INSTANCE_PATH: Path = Path("instance")
    DATABASE_URL: str = ""
    REDIS_URL: str | None = None

    CLOSE_CLIENT_ID: str | None = None
    CLOSE_CLIENT_SECRET: str | None = None
    CLOSE_SANDBOX_URL: str = "http://127.0.0.1:8100"
    CLOSE_AUTHORIZE_URL: str | None = None
    CLOSE_TOKEN_URL: str | None = None
    CLOSE_REVOKE_URL: str | None = None
    CLOSE_API_URL: str | None = None
    CLOSE_TIMEOUT_SECONDS: float = Field(default=10.0, gt=0, le=120)
    CLOSE_CONCURRENCY: int = Field(default=4, ge=1, le=32)
    # Requests/s per token and endpoint group: the most we ever send (the org gets 3x);
    # Close's RateLimit header only ever slows us below it.
    CLOSE_RATE_PER_SECOND: float = Field(default=10.0, gt=0, le=100_000)

    PUBLIC_URL: str = "http://127.0.0.1:5000"
    ALLOW_INSECURE_PUBLIC_URL: bool = False
    TRUSTED_PROXY_COUNT: int = Field(default=0, ge=0, le=10)
    SECRET_KEY: str | None = None
    TOKEN_ENCRYPTION_KEYS: CsvList = Field(default_factory=list)
    API_KEYS: CsvList = Field(default_factory=list)
    WEBHOOK_SECRET: str | None = None
    RETURN_URL_ALLOWED_ORIGINS: CsvList = Field(default_factory=list)
    CONNECT_SESSION_TTL_SECONDS: int = Field(default=3600, ge=5, le=7 * 86400)
    MANAGE_SESSION_TTL_SECONDS: int = Field(default=7 * 86400, ge=60, le=90 * 86400)

    SOURCE_URL: str = "http://127.0.0.1:8200"
    SOURCE_TOKEN: str = DEMO_SOURCE_TOKEN
    SOURCE_TIMEOUT_SECONDS: float = Field(default=10.0, gt=0, le=120)

    SYNC_INTERVAL_SECONDS: int = Field(default=900, ge=10, le=7 * 86400)
    RECONCILE_INTERVAL_SECONDS: int = Field(default=86400, ge=60)
    SCHEDULER_TICK_SECONDS: int = Field(default=30, ge=1, le=3600)
    SYNC_LOCK_TTL_SECONDS: int = Field(default=120, ge=5, le=3600)
    TOKEN_REFRESH_MARGIN_SECONDS: int = Field(default=120, ge=0, le=3600)
    WEBHOOK_MAX_BODY_BYTES: int = Field(default=64 * 1024, ge=1024)
    WEBHOOK_RATE_LIMIT_PER_MINUTE: int = Field(default=600, ge=1)
    # Redis transport: an unacknowledged task is redelivered after this long. Keep it above
    # the longest task (task_time_limit, 3600 s); countdowns are clamped below it.
    BROKER_VISIBILITY_TIMEOUT_SECONDS: int = Field(default=7200, ge=1, le=7 * 86400)
    # /readyz answers 503 when no worker has reported a heartbeat recently (off: a web process
    # stays ready without workers; the check is still reported).
    READYZ_REQUIRE_WORKER: bool = False

    # Events to the integrator (product.md "Events to the integrator"); without a URL,
    # events are only kept for the feed.
    INTEGRATOR_WEBHOOK_URL: str | None = None
    INTEGRATOR_WEBHOOK_SECRET: str | None = None
    INTEGRATOR_WEBHOOK_TIMEOUT_SECONDS: float = Field(default=10.0, gt=0, le=60)
    INTEGRATOR_WEBHOOK_RETRY_SECONDS: int = Field(default=86400, ge=0, le=7 * 86400)
    INTEGRATOR_WEBHOOK_BACKOFF_SECONDS: float = Field(default=5.0, gt=0, le=3600)
    INTEGRATOR_EVENTS_SYNC_COMPLETED: bool = False
    INTEGRATOR_EVENTS_RETENTION_DAYS: int = Field(default=30, ge=1, le=3650)

    OPERATOR_USERNAME: str | None = None
    OPERATOR_PASSWORD_HASH: str | None = None

    LOG_LEVEL: str = "INFO"
    LOG_FORMAT: str = "json"

    @field_validator(
        "TOKEN_ENCRYPTION_KEYS", "API_KEYS", "RETURN_URL_ALLOWED_ORIGINS", mode="before"
    )
    @classmethod
    def _csv(cls, value: object) -> list[str]:
        return _split_csv(value)

    @field_validator("PUBLIC_URL", "CLOSE_SANDBOX_URL", "SOURCE_URL")
    @classmethod
    def _absolute_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an absolute http(s) URL")
        return value.rstrip("/")

    @field_validator("INTEGRATOR_WEBHOOK_URL")
    @classmethod
    def _optional_absolute_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an absolute http(s) URL")
        return value

    @field_validator("RETURN_URL_ALLOWED_ORIGINS")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        normalized = []
        for origin in origins:
            if urlsplit(origin).path not in ("", "/") or "?" in origin or "#" in origin:
                raise ValueError(f"{origin!r} must be an origin (scheme://host[:port]), no path")
            try:
                normalized.append(normalized_origin(origin))
            except ValueError as exc:
                raise ValueError(f"{origin!r} {exc}") from None
        return normalized

    @field_validator("LOG_FORMAT")
    @classmethod
    def _log_format(cls, value: str) -> str:
        if value not in ("json", "console"):
            raise ValueError("must be 'json' or 'console'")
        return value

    @field_validator("TOKEN_ENCRYPTION_KEYS")
    @classmethod
    def _fernet_keys(cls, keys: list[str]) -> list[str]:
        for key in keys:
            try:
                Fernet(key.encode())
            except ValueError as exc:
                raise ValueError(
                    "each key must be a url-safe base64 32-byte Fernet key "
                    "(make one with: linksync keys generate)"
                ) from exc
        return keys

    @model_validator(mode="after")
    def _complete(self) -> Settings:
        if self.INTEGRATOR_WEBHOOK_URL and not self.INTEGRATOR_WEBHOOK_SECRET:
            raise ValueError("INTEGRATOR_WEBHOOK_SECRET must be set with INTEGRATOR_WEBHOOK_URL")
        if bool(self.CLOSE_CLIENT_ID) != bool(self.CLOSE_CLIENT_SECRET):
            raise ValueError("CLOSE_CLIENT_ID and CLOSE_CLIENT_SECRET must be set together")
        return self

    # Derived values -----------------------------------------------------------------------

    @property
    def is_dev(self) -> bool:
        return self.LINKSYNC_ENV is not Environment.PRODUCTION

    @property
    def uses_close_sandbox(self) -> bool:
        return not self.CLOSE_CLIENT_ID

    @property
    def close_client_id(self) -> str:
        return self.CLOSE_CLIENT_ID or SANDBOX_CLIENT_ID

    @property
    def close_client_secret(self) -> str:
        return self.CLOSE_CLIENT_SECRET or SANDBOX_CLIENT_SECRET

    def close_url(self, name: str) -> str:
        """One of the CLOSE_*_URL values: explicit, else the sandbox's or production's."""
        explicit: str | None = getattr(self, name)
        if explicit:
            url = explicit
        elif self.uses_close_sandbox:
            url = self.CLOSE_SANDBOX_URL + urlsplit(CLOSE_PRODUCTION[name]).path
        else:
            url = CLOSE_PRODUCTION[name]
        # The API base is joined with paths that start with "/"; the OAuth URLs end with one.
        return url.rstrip("/") if name == "CLOSE_API_URL" else url.rstrip("/") + "/"

    @property
    def redirect_uri(self) -> str:
        return f"{self.PUBLIC_URL}/oauth/close/callback"

    @property
    def database_url(self) -> str:
        return self.DATABASE_URL or f"sqlite:///{(self.INSTANCE_PATH / 'linksync.db').resolve()}"

    @property
    def https(self) -> bool:
        return self.PUBLIC_URL.startswith("https://")

    @property
    def secure_cookies(self) -> bool:
        # Production over http only starts with ALLOW_INSECURE_PUBLIC_URL on a loopback host
        # (see production_problems); there a Secure cookie would never come back.
        return self.https or (not self.is_dev and not self.ALLOW_INSECURE_PUBLIC_URL)


# Production refuses weak or missing configuration ---------------------------------------

SECRET_MIN_LENGTH = 32
# A real secret has many distinct characters (a random 32-character hex string has about 14);
# "aaaa..." or "abababab..." has a handful.
SECRET_MIN_DISTINCT = 8
FERNET_MIN_DISTINCT_BYTES = 8  # 32 random bytes have about 30 distinct values
# Words that mark a value someone meant to replace (case-insensitive substrings). Kept to
# four letters or more: a random 43-character token contains a given 3-letter word about once
# in a thousand keys, and a 4-letter one about once in 25,000.
PLACEHOLDER_WORDS = (
    "changeme",
    "change-me",
    "change_me",
    "replace",
    "placeholder",
    "example",
    "secret",
    "password",
    "xxxx",
    "fixme",
    "your-",
)
# The values .env.example shows (tests/test_settings.py checks that each one is refused).
ENV_EXAMPLE_VALUES = frozenset(
    {
        "change-me-to-a-long-random-string",
        "change-me-to-another-long-random-string",
        "change-me-to-a-third-long-random-string",
    }
)
DEMO_SOURCE_ORIGINS = ("http://127.0.0.1:8200", "http://localhost:8200")
HOW_TO_MAKE_ONE = 'make one with: python -c "import secrets; print(secrets.token_urlsafe(32))"'


def _weak_secret(value: str) -> str | None:
    """Why this secret is too weak for production, or None."""
    if value in ENV_EXAMPLE_VALUES:
        return "is the placeholder from .env.example"
    lowered = value.lower()
    if any(word in lowered for word in PLACEHOLDER_WORDS):
        # Which word matched is not said: it would be a piece of the secret.
        return "looks like a placeholder, not a random value"
    if len(value) < SECRET_MIN_LENGTH:
        return f"is shorter than {SECRET_MIN_LENGTH} characters"
    if len(set(value)) < SECRET_MIN_DISTINCT:
        return "is trivially weak (too few distinct characters)"
    return None


def _weak_fernet_key(key: str) -> bool:
    raw = base64.urlsafe_b64decode(key.encode())
    return len(set(raw)) < FERNET_MIN_DISTINCT_BYTES


def _is_loopback(host: str | None) -> bool:
    if host in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def production_problems(settings: Settings) -> list[str]:
    """Every reason this configuration must not run with LINKSYNC_ENV=production, one message
    per problem, each naming its variable. Empty outside production. `load_settings` refuses
    to start on any of them and `linksync doctor` reports each as a FAIL."""
    if settings.LINKSYNC_ENV is not Environment.PRODUCTION:
        return []
    problems: list[str] = []
    when = "when LINKSYNC_ENV=production"
    for name in REQUIRED_OUTSIDE_DEV:
        if not getattr(settings, name):
            problems.append(f"{name} must be set {when}")

    seen: dict[str, str] = {}
    named = [("SECRET_KEY", settings.SECRET_KEY), ("WEBHOOK_SECRET", settings.WEBHOOK_SECRET)]
    named += [
        (f"API_KEYS (key #{n})" if len(settings.API_KEYS) > 1 else "API_KEYS", key)
        for n, key in enumerate(settings.API_KEYS, start=1)
    ]
    for name, value in named:
        if not value:
            continue
        reason = _weak_secret(value)
        if reason:
            problems.append(f"{name} {reason}; {HOW_TO_MAKE_ONE}")
        elif value in seen:
            problems.append(f"{name} must differ from {seen[value]}")
        seen.setdefault(value, name)

    for n, key in enumerate(settings.TOKEN_ENCRYPTION_KEYS, start=1):
        if _weak_fernet_key(key):
            which = "the first key" if n == 1 else f"key #{n}"
            problems.append(
                f"TOKEN_ENCRYPTION_KEYS: {which} is trivially weak (all-zero or repeating "
                "bytes); make one with: linksync keys generate"
            )

    if not settings.CLOSE_CLIENT_ID:
        problems.append(
            f"CLOSE_CLIENT_ID and CLOSE_CLIENT_SECRET must be set {when}: without them the "
            "service uses the built-in Close sandbox and its public client secret"
        )
    elif (
        settings.CLOSE_CLIENT_ID == SANDBOX_CLIENT_ID
        or settings.CLOSE_CLIENT_SECRET == SANDBOX_CLIENT_SECRET
    ):
        problems.append(
            "CLOSE_CLIENT_ID/CLOSE_CLIENT_SECRET are the Close sandbox's public demo client; "
            "set your Close OAuth app's"
        )

    if "SOURCE_URL" not in settings.model_fields_set:
        problems.append(f"SOURCE_URL must be set {when}: it defaults to the built-in demo source")
    elif normalized_origin(settings.SOURCE_URL) in DEMO_SOURCE_ORIGINS:
        problems.append(
            f"SOURCE_URL points at the built-in demo source ({settings.SOURCE_URL}); set the "
            "integrator's event-type API"
        )
    if settings.SOURCE_TOKEN == DEMO_SOURCE_TOKEN:
        problems.append("SOURCE_TOKEN is the demo source's public token; set the source's token")

    public = urlsplit(settings.PUBLIC_URL)
    if public.scheme != "https":
        if not settings.ALLOW_INSECURE_PUBLIC_URL:
            problems.append(
                f"PUBLIC_URL must be an https:// URL {when} (got {settings.PUBLIC_URL}): "
                "browsers drop Secure cookies over http, so every form would fail with a "
                "400; for a test on this machine only, set ALLOW_INSECURE_PUBLIC_URL=true "
                "with a loopback PUBLIC_URL"
            )
        elif not _is_loopback(public.hostname):
            problems.append(
                "ALLOW_INSECURE_PUBLIC_URL=true is accepted only with a loopback PUBLIC_URL "
                f"(127.0.0.1, ::1 or localhost), not {settings.PUBLIC_URL}"
            )
    return problems


def _dev_secret(instance: Path, name: str, make: str) -> str:
    """A generated local secret, kept in instance/ so restarts keep working."""
    instance.mkdir(parents=True, exist_ok=True)
    path = instance / f"dev-{name.lower().replace('_', '-')}"
    if path.exists():
        return path.read_text().strip()
    value = Fernet.generate_key().decode() if make == "fernet" else secrets.token_urlsafe(32)
    path.write_text(value)
    path.chmod(0o600)
    log.warning("generated a local development %s in %s (dev mode only)", name, path)
    return value


def load_settings(*, check_production: bool = True, **overrides: object) -> Settings:
    """Build and validate the settings; raise SettingsError naming the bad variable.

    `check_production=False` skips the production policy (production_problems), for
    `linksync doctor`, which reports each problem itself and goes on checking the rest."""
    check_variable_names(Path(str(Settings.model_config.get("env_file") or ".env")), os.environ)
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SettingsError(_validation_problems(exc)) from None
    refused = production_problems(settings) if check_production else []
    if refused:
        # Each problem starts with the variable it is about (one line: `linksync: VAR: ...`).
        raise SettingsError("; ".join(refused), refused)
    if settings.is_dev:
        instance = settings.INSTANCE_PATH
        if not settings.SECRET_KEY:
            settings.SECRET_KEY = _dev_secret(instance, "SECRET_KEY", "token")
        if not settings.TOKEN_ENCRYPTION_KEYS:
            settings.TOKEN_ENCRYPTION_KEYS = [
                _dev_secret(instance, "TOKEN_ENCRYPTION_KEYS", "fernet")
            ]
        if not settings.API_KEYS:
            settings.API_KEYS = [_dev_secret(instance, "API_KEYS", "token")]
        if not settings.WEBHOOK_SECRET:
            settings.WEBHOOK_SECRET = _dev_secret(instance, "WEBHOOK_SECRET", "token")
    return settings


# Naming the problem: typos, and one line for the operator ---------------------------------

# Names a .env may hold that are not settings: read by gunicorn_conf.py, Prometheus, compose.
OTHER_VARIABLES = frozenset({"PROMETHEUS_MULTIPROC_DIR"})
OTHER_PREFIXES = ("GUNICORN_", "COMPOSE_", "DOCKER_")
OUR_PREFIX = "LINKSYNC_"


def _validation_problems(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        name = ".".join(str(p) for p in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        # A model-level rule (no field) already starts with the variables it is about.
        problems.append(f"{name}: {message}" if name else message)
    return "; ".join(problems)


def unknown_variable_problems(
    env_file: Mapping[str, str | None], environ: Mapping[str, str]
) -> list[str]:
    """`NAME: problem` for each variable that looks like a misspelled setting.

    Every name in the .env file must be a setting (or one of OTHER_VARIABLES); from the real
    environment only names that look like ours are judged (the LINKSYNC_ prefix, or a near
    miss of a setting's name), because the environment belongs to everything else too."""
    fields = list(Settings.model_fields)
    problems = []

    def suggestion(name: str, cutoff: float) -> str | None:
        if name.upper() in fields:
            return name.upper()
        matches = difflib.get_close_matches(name.upper(), fields, n=1, cutoff=cutoff)
        return matches[0] if matches else None

    for name in env_file:
        if name in fields or name in OTHER_VARIABLES or name.startswith(OTHER_PREFIXES):
            continue
        likely = suggestion(name, 0.6)
        hint = f"did you mean {likely}?" if likely else "see .env.example for the settings"
        problems.append(f"{name}: unknown variable in .env; {hint}")
    for name in environ:
        if name in fields or name in env_file:
            continue
        likely = suggestion(name, 0.88)
        if likely:
            problems.append(f"{name}: unknown variable in the environment; did you mean {likely}?")
        elif name.startswith(OUR_PREFIX):
            problems.append(f"{name}: unknown variable in the environment; not a LinkSync setting")
    return problems


def check_variable_names(env_path: Path, environ: Mapping[str, str]) -> None:
    """Raise SettingsError naming every misspelled variable (see unknown_variable_problems)."""
    env_file = dotenv_values(env_path) if env_path.is_file() else {}
    problems = unknown_variable_problems(env_file, environ)
    if problems:
        raise SettingsError("; ".join(problems))


def settings_error_line(exc: SettingsError) -> str:
    """The one line an entry point prints: `linksync: <VARIABLE>: <problem>`."""
    return "linksync: " + " ".join(str(exc).split())


def load_settings_or_exit(**overrides: object) -> Settings:
    """load_settings for a process's entry point: a bad setting prints one line and exits 2."""
    try:
        return load_settings(**overrides)  # type: ignore[arg-type]
    except SettingsError as exc:
        exit_with_settings_error(exc)


def exit_with_settings_error(exc: SettingsError) -> NoReturn:
    print(settings_error_line(exc), file=sys.stderr)  # logging is not configured yet
    raise SystemExit(2)
