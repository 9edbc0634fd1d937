"""Headers every answer carries, whichever layer serves it (Flask's hook, the webhook
endpoint in front of Flask)."""

from __future__ import annotations

import itertools
import os
import secrets
import weakref

# One year, this host only: includeSubDomains or preload would bind the operator's other
# hosts, which this service cannot know about.
HSTS = "max-age=31536000"


def security_headers(*, https: bool) -> tuple[tuple[str, str], ...]:
    headers = (
        ("X-Content-Type-Options", "nosniff"),
        ("X-Frame-Options", "DENY"),
        ("Referrer-Policy", "no-referrer"),
    )
    return (*headers, ("Strict-Transport-Security", HSTS)) if https else headers


class RequestIds:
    """X-Request-Id values for both layers: the client's own (at most 64 characters), else a
    random prefix and a counter: unique, and no system call per request. A forked child
    (a gunicorn worker of a preloaded app) draws a prefix of its own."""

    def __init__(self) -> None:
        self._reset()
        _live.add(self)

    def _reset(self) -> None:
        self._prefix, self._counter = secrets.token_hex(4), itertools.count()

    def __call__(self, given: str | None) -> str:
        return (given or "")[:64] or f"{self._prefix}{next(self._counter) & 0xFFFFFFFF:08x}"


_live: weakref.WeakSet[RequestIds] = weakref.WeakSet()


def _after_fork() -> None:
    for ids in list(_live):
        ids._reset()


os.register_at_fork(after_in_child=_after_fork)
