"""Builds the long-lived collaborators of one process (web app or worker) from settings.

Nothing here connects at construction: the Redis client and the SQLAlchemy engine connect
lazily on first use, so importing or building costs no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import redis
import requests

from service.close.client import CloseClient, make_http_session
from service.close.oauth import CloseOAuth
from service.close.ratelimit import LocalRateBudget, RateBudget, RedisRateBudget
from service.close.tokens import TokenManager
from service.infra import outbox
from service.infra.coordination import Coordinator, RedisCoordinator, SqlCoordinator
from service.infra.crypto import TokenCipher
from service.infra.db import Database
from service.infra.models import Connection
from service.jobs import Enqueue, make_celery, wake_events_with
from service.settings import Settings
from service.source.client import SourceClient


@dataclass
class Services:
    settings: Settings
    enqueue: Enqueue | None = None
    # Called after a commit that wrote integrator events; None: send through a Celery app
    # built from the settings (what the web app and the CLI need).
    wake_events: Callable[[], None] | None = None
    _http: requests.Session = field(default_factory=make_http_session, repr=False)

    @cached_property
    def db(self) -> Database:
        db = Database(self.settings.database_url)
        outbox.install_wake(db.sessionmaker, self._wake_events)
        return db

    def _wake_events(self) -> None:
        if self.wake_events is None:
            self.wake_events = wake_events_with(make_celery(self.settings))
        self.wake_events()

    @cached_property
    def redis(self) -> redis.Redis | None:
        if not self.settings.REDIS_URL:
            return None
        return redis.Redis.from_url(
            self.settings.REDIS_URL,
            socket_timeout=5,
            socket_connect_timeout=5,
            health_check_interval=30,
        )

    @cached_property
    def cipher(self) -> TokenCipher:
        return TokenCipher(self.settings.TOKEN_ENCRYPTION_KEYS)

    @cached_property
    def coordinator(self) -> Coordinator:
        return RedisCoordinator(self.redis) if self.redis is not None else SqlCoordinator(self.db)

    @cached_property
    def budget(self) -> RateBudget:
        rate = self.settings.CLOSE_RATE_PER_SECOND
        if self.redis is not None:
            return RedisRateBudget(self.redis, default_rate=rate)
        return LocalRateBudget(default_rate=rate)

    @cached_property
    def oauth(self) -> CloseOAuth:
        s = self.settings
        return CloseOAuth(
            client_id=s.close_client_id,
            client_secret=s.close_client_secret,
            authorize_url=s.close_url("CLOSE_AUTHORIZE_URL"),
            token_url=s.close_url("CLOSE_TOKEN_URL"),
            revoke_url=s.close_url("CLOSE_REVOKE_URL"),
            redirect_uri=s.redirect_uri,
            timeout=s.CLOSE_TIMEOUT_SECONDS,
        )

    @cached_property
    def tokens(self) -> TokenManager:
        return TokenManager(
            db=self.db,
            cipher=self.cipher,
            coordinator=self.coordinator,
            oauth=self.oauth,
            margin_seconds=self.settings.TOKEN_REFRESH_MARGIN_SECONDS,
        )

    @cached_property
    def source(self) -> SourceClient:
        return SourceClient(
            base_url=self.settings.SOURCE_URL,
            token=self.settings.SOURCE_TOKEN,
            http=self._http,
            timeout=self.settings.SOURCE_TIMEOUT_SECONDS,
        )

    def close_for(self, connection: Connection) -> CloseClient:
        """A Close client acting as this connection's user, sharing the process's pool."""
        return CloseClient(
            api_url=self.settings.close_url("CLOSE_API_URL"),
            http=self._http,
            budget=self.budget,
            tokens=self.tokens.provider(connection.id),
            org_id=connection.close_org_id or "unknown",
            token_key=str(connection.id),
            timeout=self.settings.CLOSE_TIMEOUT_SECONDS,
        )

    def close(self) -> None:
        self._http.close()
        if "db" in self.__dict__:
            self.db.dispose()
