"""Who may use the console at /admin: the operator's credentials (a scrypt password hash from
settings), the sign-in throttle shared by every web process, and the signed-in session.

The throttle slows guessing down instead of locking people out. Failures are counted twice:
per client address (so one guesser is slowed hard, to one try per 15 minutes, without
touching anyone else) and per username across all addresses (so guesses spread over many
addresses are slowed too, but only to one try a minute: an attacker can never keep the real
operator out for longer than that). The first few failures are free; each further one doubles
the wait, up to the cap. Everything lives in the coordinator (Redis, or the coordination
table), so every gunicorn worker shares it: a "gate" key per scope is held during a password
check (parallel guesses cannot slip past) and then for the wait; one short-lived slot per
failure counts failures in a sliding window. The server never sleeps (that would tie up web
threads for the attacker); it answers 429 with Retry-After.

Signed-in sessions also live in the coordinator: logout deletes the session's entry, so a
copied cookie stops working at once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import wraps
from typing import Any, TypeVar, cast

from flask import current_app, g, redirect, request, session, url_for
from werkzeug.security import check_password_hash, generate_password_hash

from service.errors import Unauthorized
from service.infra import locks
from service.infra.coordination import Coordinator
from service.settings import Settings

# Sliding window: a failure is forgotten this long after it happened.
WINDOW_SECONDS = 15 * 60
# Held while one password check runs; expires on its own if the process dies mid-check.
IN_FLIGHT_SECONDS = 10
MAX_SLOTS = 20


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
class Scope:
    """What failures are counted against, and how hard they slow the next attempt down."""

    name: str
    free: int  # failures that cost nothing
    cap: int  # the longest wait, seconds

    def delay(self, failures: int) -> int:
        """1 s after the first failure beyond the free ones, doubling, capped."""
        if failures <= self.free:
            return 0
        return int(min(self.cap, 2 ** (failures - self.free - 1)))


PER_CLIENT = Scope("client", free=3, cap=15 * 60)
PER_USERNAME = Scope("username", free=10, cap=60)


@dataclass(frozen=True)
class Attempt:
    held: list[tuple[Scope, str, str]]  # (scope, key digest, gate token)


@dataclass(frozen=True)
class Throttled:
    scope: Scope
    retry_after: int


class LoginThrottle:
    """Growing waits per client address and per username (see the module docstring)."""

    def __init__(self, coordinator: Coordinator, *, window: int = WINDOW_SECONDS) -> None:
        self.coordinator = coordinator
        self.window = window

    @staticmethod
    def _key(scope: Scope, value: str) -> str:
        # Hashed: usernames are attacker-chosen text, and the store needs no copy of them.
        return hashlib.sha256(f"{scope.name}\0{value}".encode()).hexdigest()[:32]

    def begin(self, username: str, client: str) -> Attempt | Throttled:
        """Take both gates for one password check, or say how long to wait."""
        held: list[tuple[Scope, str, str]] = []
        for scope, value in ((PER_CLIENT, client), (PER_USERNAME, username)):
            key = self._key(scope, value)
            token = self.coordinator.try_acquire(locks.operator_login_gate(key), IN_FLIGHT_SECONDS)
            if token is None:
                for _scope, held_key, held_token in held:
                    self.coordinator.release(locks.operator_login_gate(held_key), held_token)
                return Throttled(scope, max(1, scope.delay(self._failures(key))))
            held.append((scope, key, token))
        return Attempt(held)

    def failed(self, attempt: Attempt) -> int:
        """Count the failure in each scope and hold the gates for the wait; return the longest."""
        longest = 0
        for scope, key, token in attempt.held:
            failures = self._count_failure(key)
            wait = scope.delay(failures)
            gate = locks.operator_login_gate(key)
            if wait <= 0 or not self.coordinator.extend(gate, token, wait):
                self.coordinator.release(gate, token)
            longest = max(longest, wait)
        return longest

    def succeeded(self, attempt: Attempt) -> None:
        """The password was right: forget this client's failures. The username's count is kept
        (it decays with the window): the operator signing in must not wipe the slate for
        guesses coming from elsewhere."""
        for scope, key, token in attempt.held:
            if scope is PER_CLIENT:
                for slot in range(MAX_SLOTS):
                    self.coordinator.pop_flag(locks.operator_login_slot(key, slot))
            self.coordinator.release(locks.operator_login_gate(key), token)

    def _count_failure(self, key: str) -> int:
        for slot in range(MAX_SLOTS):
            if self.coordinator.set_flag(locks.operator_login_slot(key, slot), self.window):
                return slot + 1
        return MAX_SLOTS

    def _failures(self, key: str) -> int:
        count = 0
        while count < MAX_SLOTS and self.coordinator.has_flag(
            locks.operator_login_slot(key, count)
        ):
            count += 1
        return count


# The operator's browser session ---------------------------------------------------------

SESSION_KEY = "operator"
SESSION_LIFETIME = timedelta(hours=8)

View = TypeVar("View", bound=Callable[..., Any])


def current_operator() -> str | None:
    """The signed-in operator's name, or None (no session, expired, signed out, or credentials
    changed). Checked once per request."""
    if "operator" not in g:
        g.operator = _check_session()
    name: str | None = g.operator
    return name


def _check_session() -> str | None:
    data = session.get(SESSION_KEY)
    if not isinstance(data, dict):
        return None
    until = data.get("until")
    if not isinstance(until, int | float) or until < time.time():
        return None
    if data.get("fp") != credentials_fingerprint(current_settings()):
        return None
    sid = data.get("sid")
    if not isinstance(sid, str) or not current_coordinator().has_flag(_session_key(sid)):
        return None  # signed out (or from before server-side sessions)
    return str(data.get("name", ""))


def _session_key(sid: str) -> str:
    return locks.operator_session(hashlib.sha256(sid.encode()).hexdigest()[:32])


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


def start_session(settings: Settings, coordinator: Coordinator, username: str) -> None:
    """A fresh session: nothing from before the sign-in (no fixation), a new CSRF token, and
    a server-side entry that logout deletes."""
    sid = secrets.token_urlsafe(24)
    coordinator.set_flag(_session_key(sid), SESSION_LIFETIME.total_seconds())
    session.clear()
    session.permanent = True
    session[SESSION_KEY] = {
        "name": username,
        "until": time.time() + SESSION_LIFETIME.total_seconds(),
        "fp": credentials_fingerprint(settings),
        "sid": sid,
    }
    g.pop("operator", None)


def end_session(coordinator: Coordinator) -> None:
    """Sign out: the server forgets the session, so a copy of the cookie is worthless too."""
    data = session.get(SESSION_KEY)
    if isinstance(data, dict) and isinstance(data.get("sid"), str):
        coordinator.pop_flag(_session_key(data["sid"]))
    session.clear()
    g.pop("operator", None)


def current_settings() -> Settings:
    settings: Settings = current_app.extensions["linksync"].settings
    return settings


def current_coordinator() -> Coordinator:
    coordinator: Coordinator = current_app.extensions["linksync"].coordinator
    return coordinator
