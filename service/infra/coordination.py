"""Cross-process locks and flags: Redis when configured, the database otherwise.

Used for the per-connection sync lock (with a TTL and a heartbeat so a dead worker cannot hold
it for ever), the per-connection token-refresh lock, and the "dirty"/"pending" flags that
coalesce bursts of sync triggers.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Protocol

import redis
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from service.infra.db import Database, utcnow
from service.infra.locks import HEARTBEATS_PER_TTL
from service.infra.models import CoordinationKey


class LockNotAcquired(Exception):
    pass


class Coordinator(Protocol):
    def try_acquire(self, key: str, ttl: float) -> str | None:
        """Take the lock; return its owner token, or None when someone else holds it."""

    def extend(self, key: str, token: str, ttl: float) -> bool:
        """Push the expiry out; False when the lock was lost (expired and taken)."""

    def release(self, key: str, token: str) -> None: ...

    def set_flag(self, key: str, ttl: float) -> bool:
        """Set a flag; True when it was not set before."""

    def pop_flag(self, key: str) -> bool:
        """Clear a flag; True when it was set."""

    def has_flag(self, key: str) -> bool: ...

    def held(self, keys: list[str]) -> set[str]:
        """Which of these keys (locks or flags) are set now: one round trip for all."""

    def touch(self, key: str, value: str, ttl: float) -> None:
        """Set `key` to `value` whatever it was (a heartbeat), expiring after `ttl`."""

    def scan(self, prefix: str) -> dict[str, str]:
        """Every live key starting with `prefix`, with its value."""


class RedisCoordinator:
    _RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
    _EXTEND = (
        "if redis.call('get', KEYS[1]) == ARGV[1] then "
        "return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
    )

    def __init__(self, client: redis.Redis, prefix: str = "linksync:") -> None:
        self.redis = client
        self.prefix = prefix
        self._release = client.register_script(self._RELEASE)
        self._extend = client.register_script(self._EXTEND)

    def try_acquire(self, key: str, ttl: float) -> str | None:
        token = secrets.token_hex(16)
        if self.redis.set(self.prefix + key, token, nx=True, px=int(ttl * 1000)):
            return token
        return None

    def extend(self, key: str, token: str, ttl: float) -> bool:
        return bool(self._extend(keys=[self.prefix + key], args=[token, int(ttl * 1000)]))

    def release(self, key: str, token: str) -> None:
        self._release(keys=[self.prefix + key], args=[token])

    def set_flag(self, key: str, ttl: float) -> bool:
        return bool(self.redis.set(self.prefix + key, "1", nx=True, px=int(ttl * 1000)))

    def pop_flag(self, key: str) -> bool:
        return bool(self.redis.delete(self.prefix + key))

    def has_flag(self, key: str) -> bool:
        return bool(self.redis.exists(self.prefix + key))

    def held(self, keys: list[str]) -> set[str]:
        if not keys:
            return set()
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.exists(self.prefix + key)
        return {key for key, found in zip(keys, pipe.execute(), strict=True) if found}

    def touch(self, key: str, value: str, ttl: float) -> None:
        self.redis.set(self.prefix + key, value, px=int(ttl * 1000))

    def scan(self, prefix: str) -> dict[str, str]:
        names = list(self.redis.scan_iter(match=self.prefix + prefix + "*", count=500))
        if not names:
            return {}
        values = self.redis.mget(names)
        return {
            name.decode()[len(self.prefix) :]: value.decode()
            for name, value in zip(names, values, strict=True)  # type: ignore[arg-type]
            if value is not None
        }


class SqlCoordinator:
    """The same semantics on the coordination_keys table, for the embedded (no Redis) default."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def try_acquire(self, key: str, ttl: float) -> str | None:
        token = secrets.token_hex(16)
        now = utcnow()
        try:
            with self.db.session() as session:
                session.execute(
                    delete(CoordinationKey).where(
                        CoordinationKey.key == key, CoordinationKey.expires_at < now
                    )
                )
                session.add(
                    CoordinationKey(key=key, value=token, expires_at=now + timedelta(seconds=ttl))
                )
        except IntegrityError:
            return None
        return token

    def extend(self, key: str, token: str, ttl: float) -> bool:
        with self.db.session() as session:
            result = session.execute(
                update(CoordinationKey)
                .where(CoordinationKey.key == key, CoordinationKey.value == token)
                .values(expires_at=utcnow() + timedelta(seconds=ttl))
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def release(self, key: str, token: str) -> None:
        with self.db.session() as session:
            session.execute(
                delete(CoordinationKey).where(
                    CoordinationKey.key == key, CoordinationKey.value == token
                )
            )

    def set_flag(self, key: str, ttl: float) -> bool:
        return self.try_acquire(key, ttl) is not None

    def pop_flag(self, key: str) -> bool:
        with self.db.session() as session:
            found = session.scalar(
                select(CoordinationKey.expires_at).where(CoordinationKey.key == key)
            )
            session.execute(delete(CoordinationKey).where(CoordinationKey.key == key))
            return found is not None and found > utcnow()

    def has_flag(self, key: str) -> bool:
        with self.db.session() as session:
            found = session.scalar(
                select(CoordinationKey.expires_at).where(CoordinationKey.key == key)
            )
            return found is not None and found > utcnow()

    def held(self, keys: list[str]) -> set[str]:
        if not keys:
            return set()
        with self.db.session() as session:
            return set(
                session.scalars(
                    select(CoordinationKey.key).where(
                        CoordinationKey.key.in_(keys), CoordinationKey.expires_at > utcnow()
                    )
                )
            )

    def touch(self, key: str, value: str, ttl: float) -> None:
        expires = utcnow() + timedelta(seconds=ttl)
        with self.db.session() as session:
            done = session.execute(
                update(CoordinationKey)
                .where(CoordinationKey.key == key)
                .values(value=value, expires_at=expires)
            )
            if not done.rowcount:  # type: ignore[attr-defined]
                session.add(CoordinationKey(key=key, value=value, expires_at=expires))

    def scan(self, prefix: str) -> dict[str, str]:
        with self.db.session() as session:
            rows = session.execute(
                select(CoordinationKey.key, CoordinationKey.value).where(
                    CoordinationKey.key.startswith(prefix, autoescape=True),
                    CoordinationKey.expires_at > utcnow(),
                )
            )
            return {row.key: row.value for row in rows}


class Heartbeat:
    """Keeps a lock alive from a background thread while long work runs."""

    def __init__(self, coordinator: Coordinator, key: str, token: str, ttl: float) -> None:
        self._coordinator, self._key, self._token, self._ttl = coordinator, key, token, ttl
        self._stop = threading.Event()
        self.lost = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat:{key}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._ttl / HEARTBEATS_PER_TTL):
            try:
                if not self._coordinator.extend(self._key, self._token, self._ttl):
                    self.lost.set()
                    return
            except Exception:  # noqa: S112 - a missed beat is retried; the TTL is the backstop
                continue

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@contextmanager
def held_lock(
    coordinator: Coordinator, key: str, *, ttl: float, wait: float = 0.0, poll: float = 0.05
) -> Iterator[str]:
    """Hold `key` for the duration of the block (waiting up to `wait` seconds for it)."""
    deadline = time.monotonic() + wait
    while True:
        token = coordinator.try_acquire(key, ttl)
        if token is not None:
            break
        if time.monotonic() >= deadline:
            raise LockNotAcquired(key)
        time.sleep(poll)
    try:
        with Heartbeat(coordinator, key, token, ttl):
            yield token
    finally:
        try:
            coordinator.release(key, token)
        except Exception:  # noqa: S110 - the TTL frees it if the store is briefly gone
            pass
