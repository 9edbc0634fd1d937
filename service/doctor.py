"""`linksync doctor`: the checks an operator runs first when something looks wrong."""

from __future__ import annotations

from email.utils import parsedate_to_datetime

import requests
from sqlalchemy import text

from service.infra import heartbeats, migrate
from service.infra.db import Database, utcnow
from service.settings import Settings, SettingsError, load_settings, production_problems

Check = tuple[str, bool, str]
MAX_SKEW_SECONDS = 30.0


def _workers(settings: Settings) -> Check:
    """FAIL when no worker has sent a heartbeat recently: accepted syncs would wait."""
    from service.services import Services

    svc = Services(settings)
    try:
        found = heartbeats.status(svc.coordinator)
        return ("workers", found.ok, found.describe())
    except Exception as exc:
        return ("workers", False, f"heartbeats unreadable: {type(exc).__name__}")
    finally:
        svc.close()


def run_checks() -> list[Check]:
    try:
        # The production policy is checked below, one FAIL per problem, so that the other
        # checks still run on a configuration production would refuse.
        settings = load_settings(check_production=False)
    except SettingsError as exc:
        return [("settings", False, problem) for problem in exc.problems]
    refused = production_problems(settings)
    results: list[Check] = [("settings", False, problem) for problem in refused] or [
        (
            "settings",
            True,
            f"{settings.LINKSYNC_ENV.value} mode"
            + ("; Close sandbox" if settings.uses_close_sandbox else "; real Close app"),
        )
    ]
    db = Database(settings.database_url)
    try:
        with db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        results.append(("database", True, db.engine.url.render_as_string(hide_password=True)))
        current = migrate.current_revision(db.engine)
        head = migrate.heads(settings.database_url)
        results.append(
            (
                "migrations",
                current in head,
                f"at {current or 'nothing'}; head is {', '.join(head)}"
                + ("" if current in head else " (run: linksync db upgrade)"),
            )
        )
    except Exception as exc:
        results.append(("database", False, f"unreachable: {type(exc).__name__}: {exc}"[:200]))
    finally:
        db.dispose()
    results.append(_workers(settings))
    if settings.REDIS_URL:
        import redis

        try:
            redis.Redis.from_url(settings.REDIS_URL, socket_timeout=3).ping()
            results.append(("broker", True, "Redis answers PING"))
        except Exception as exc:
            results.append(("broker", False, f"Redis unreachable: {type(exc).__name__}"))
    else:
        results.append(("broker", True, "embedded SQLite broker (no REDIS_URL)"))
    for name, url in (
        ("close token endpoint", settings.close_url("CLOSE_TOKEN_URL")),
        ("close api", settings.close_url("CLOSE_API_URL") + "/me/"),
        ("source", settings.SOURCE_URL),
    ):
        try:
            response = requests.get(url, timeout=5)
            results.append((name, response.status_code < 500, _reachability(url, response)))
            if name == "close api" and response.headers.get("Date"):
                skew = abs(
                    (utcnow() - parsedate_to_datetime(response.headers["Date"])).total_seconds()
                )
                results.append(
                    ("clock skew", skew <= MAX_SKEW_SECONDS, f"{skew:.1f}s against Close's clock")
                )
        except requests.RequestException as exc:
            results.append((name, False, f"{url} unreachable: {type(exc).__name__}"))
    return results


def _reachability(url: str, response: requests.Response) -> str:
    """What an unauthenticated GET tells: the server is there (any answer below 500), not that
    our credentials work (the token endpoint wants a POST, the API and the source a token)."""
    code = response.status_code
    if code >= 500:
        return f"{url}: server error ({code} for an unauthenticated GET)"
    if code >= 400:
        return f"{url}: reachable ({code} for an unauthenticated GET is expected)"
    return f"{url}: reachable (answered {code})"
