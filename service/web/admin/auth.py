"""Who may use the console at /admin: the operator's credentials (a scrypt password hash from
settings), the sign-in throttle shared by every web process, and the signed-in session.

The throttle keeps one short-lived slot per attempt in the coordinator (Redis when configured,
the coordination table otherwise), so every gunicorn worker sees the same count and claiming a
slot is atomic: parallel guesses cannot slip past the limit. A slot is claimed *before* the
password is checked and expires on its own after the window, which makes the window slide.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import wraps
from typing import Any, TypeVar, cast

from flask import current_app, redirect, request, session, url_for
from werkzeug.security import check_password_hash, generate_password_hash

from service.errors import Unauthorized
from service.infra import locks
from service.infra.coordination import Coordinator
from service.settings import Settings

MAX_FAILURES = 5
WINDOW_SECONDS = 15 * 60


def hash_password(password: str) -> str:
    """The value for OPERATOR_PASSWORD_HASH (`linksync operator hash-password` prints it)."""
    return generate_password_hash(password, method="scrypt")


def verify_password(password_hash: str, password: str) -> bool:
    """Constant-time check of `password` against a werkzeug hash; a malformed hash never matches."""
    if not password_hash:
        return False
    try:
        return check_password_hash(password_hash, password)
    except (ValueError, TypeError):
        return False


def console_enabled(settings: Settings) -> bool:
    return bool(settings.OPERATOR_USERNAME and settings.OPERATOR_PASSWORD_HASH)


def authenticate(settings: Settings, username: str, password: str) -> bool:
    """Whether these are the operator's credentials. The password is always checked against the
    configured hash, so an unknown username costs exactly as much as a wrong password."""
    expected = settings.OPERATOR_USERNAME or ""
    user_ok = hmac.compare_digest(username.encode(), expected.encode())
    password_ok = verify_password(settings.OPERATOR_PASSWORD_HASH or "", password)
    return bool(expected) and user_ok and password_ok


def credentials_fingerprint(settings: Settings) -> str:
    """Stored in the operator's session: changing the username or password signs everyone out."""
    material = f"{settings.OPERATOR_USERNAME}\0{settings.OPERATOR_PASSWORD_HASH}".encode()
    return hashlib.sha256(material).hexdigest()[:16]


@dataclass(frozen=True)
class Attempt:
    key: str
    slot: int


class LoginThrottle:
    """At most `limit` failed sign-ins per (username, client address) in any `window` seconds."""

    def __init__(
        self, coordinator: Coordinator, *, limit: int = MAX_FAILURES, window: int = WINDOW_SECONDS
    ) -> None:
        self.coordinator = coordinator
        self.limit = limit
        self.window = window

    @staticmethod
    def _key(username: str, client: str) -> str:
        # Hashed: usernames are attacker-chosen text, and the store needs no copy of them.
        digest = hashlib.sha256(f"{username}\0{client}".encode()).hexdigest()[:32]
        return digest

    def begin(self, username: str, client: str) -> Attempt | None:
        """Claim a slot for one password check; None when the limit is reached (throttled)."""
        key = self._key(username, client)
        for slot in range(self.limit):
            if self.coordinator.set_flag(locks.operator_login_slot(key, slot), self.window):
                return Attempt(key, slot)
        return None

    def succeeded(self, attempt: Attempt) -> None:
        """The password was right: forget this pair's earlier failures."""
        for slot in range(self.limit):
            self.coordinator.pop_flag(locks.operator_login_slot(attempt.key, slot))


# The operator's browser session ---------------------------------------------------------

SESSION_KEY = "operator"
SESSION_LIFETIME = timedelta(hours=8)

View = TypeVar("View", bound=Callable[..., Any])


def current_operator() -> str | None:
    """The signed-in operator's name, or None (no session, expired, or credentials changed)."""
    data = session.get(SESSION_KEY)
    if not isinstance(data, dict):
        return None
    until = data.get("until")
    if not isinstance(until, int | float) or until < time.time():
        return None
    if data.get("fp") != credentials_fingerprint(current_settings()):
        return None
    return str(data.get("name", ""))


def _is_api() -> bool:
    return request.path.startswith("/admin/api/")


def login_required(view: View) -> View:
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if current_operator() is None:
            if _is_api():
                raise Unauthorized("Operator sign-in required.")
            target = request.full_path if request.method == "GET" else request.path
            return redirect(url_for("web_admin.login", next=target.rstrip("?")))
        return view(*args, **kwargs)

    return cast(View, wrapper)


def start_session(settings: Settings, username: str) -> None:
    """A fresh session: nothing from before the sign-in (no fixation), a new CSRF token."""
    session.clear()
    session.permanent = True
    session[SESSION_KEY] = {
        "name": username,
        "until": time.time() + SESSION_LIFETIME.total_seconds(),
        "fp": credentials_fingerprint(settings),
    }


def current_settings() -> Settings:
    settings: Settings = current_app.extensions["linksync"].settings
    return settings
