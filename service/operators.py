"""Operator credentials for the console: a hashed password from settings, and a login throttle
shared by every web process (Redis when configured, the coordination table otherwise)."""

from __future__ import annotations

import hmac
import time

from werkzeug.security import check_password_hash, generate_password_hash

from service.container import Services

MAX_FAILURES = 5
WINDOW_SECONDS = 15 * 60
# Checked when the username is unknown, so that costs as much as a wrong password.
_DUMMY_HASH = generate_password_hash("not-a-real-password", method="scrypt")


def hash_password(password: str) -> str:
    return generate_password_hash(password, method="scrypt")


def verify_operator(svc: Services, username: str, password: str) -> bool:
    settings = svc.settings
    expected_user = settings.OPERATOR_USERNAME or ""
    stored = settings.OPERATOR_PASSWORD_HASH or _DUMMY_HASH
    user_ok = hmac.compare_digest(username.encode(), expected_user.encode())
    password_ok = check_password_hash(stored, password)
    return bool(expected_user) and user_ok and password_ok


def console_enabled(svc: Services) -> bool:
    return bool(svc.settings.OPERATOR_USERNAME and svc.settings.OPERATOR_PASSWORD_HASH)


def _key(username: str, client: str) -> str:
    window = int(time.time() // WINDOW_SECONDS)
    return f"login-failures:{username[:64]}:{client[:64]}:{window}"


def failures(svc: Services, username: str, client: str) -> int:
    key = _key(username, client)
    if svc.redis is not None:
        return int(svc.redis.get("linksync:" + key) or 0)  # type: ignore[arg-type]
    return sum(1 for n in range(MAX_FAILURES + 1) if svc.coordinator.has_flag(f"{key}:{n}"))


def record_failure(svc: Services, username: str, client: str) -> None:
    key = _key(username, client)
    if svc.redis is not None:
        pipe = svc.redis.pipeline()
        pipe.incr("linksync:" + key)
        pipe.expire("linksync:" + key, WINDOW_SECONDS * 2)
        pipe.execute()
        return
    for n in range(MAX_FAILURES + 1):
        if svc.coordinator.set_flag(f"{key}:{n}", WINDOW_SECONDS * 2):
            return


def throttled(svc: Services, username: str, client: str) -> bool:
    return failures(svc, username, client) >= MAX_FAILURES
