"""The one path through which access tokens are read and refreshed.

Close rotates refresh tokens: each refresh returns a new one and kills the old. So a refresh is
serialized per connection across every process (a lock with a TTL), the stored pair is re-read
after taking the lock (another worker may have refreshed already: then we use its token), and
the rotated pair is committed before the new access token is used.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from service.close.client import CloseAuthError
from service.close.oauth import CloseOAuth, OAuthFailure, TokenSet
from service.infra import locks, metrics, outbox
from service.infra.coordination import Coordinator, LockNotAcquired, held_lock
from service.infra.crypto import TokenCipher
from service.infra.db import Database, utcnow
from service.infra.models import Connection, ConnectionStatus

log = logging.getLogger(__name__)

NEEDS_REAUTH_REASON = (
    "Close refused the refresh token (the app was revoked or the user removed): "
    "re-authorization needed; reconnect to resume syncing"
)


def needs_reauth_reason(exc: OAuthFailure) -> str:
    """The status reason of a connection whose grant is gone, naming what Close said."""
    said = str(exc)[:300]
    status = f"HTTP {exc.status} " if exc.status is not None else ""
    return f"{NEEDS_REAUTH_REASON} (Close's token endpoint answered {status}{said})"


class NeedsReauth(Exception):
    """The grant is gone (revoked, user removed): the admin must connect again."""


class NotConnected(Exception):
    """The connection has no usable tokens (disconnected or never completed)."""


class TokenRefreshUnavailable(Exception):
    """Close's token endpoint could not be reached; try again later."""


def store_tokens(
    connection: Connection,
    tokens: TokenSet,
    cipher: TokenCipher,
    margin_seconds: float = 120.0,
) -> None:
    connection.access_token_enc = cipher.encrypt(tokens.access_token)
    connection.refresh_token_enc = cipher.encrypt(tokens.refresh_token)
    connection.token_expires_at = tokens.expires_at
    lifetime = max((tokens.expires_at - utcnow()).total_seconds(), 0.0)
    connection.token_refresh_at = tokens.expires_at - timedelta(
        seconds=min(margin_seconds, lifetime / 4)
    )
    connection.token_generation = (connection.token_generation or 0) + 1


def wipe_tokens(connection: Connection) -> None:
    connection.access_token_enc = None
    connection.refresh_token_enc = None
    connection.token_expires_at = None
    connection.token_refresh_at = None


class TokenManager:
    def __init__(
        self,
        *,
        db: Database,
        cipher: TokenCipher,
        coordinator: Coordinator,
        oauth: CloseOAuth,
        margin_seconds: float = 120.0,
    ) -> None:
        self.db = db
        self.cipher = cipher
        self.coordinator = coordinator
        self.oauth = oauth
        self.margin = timedelta(seconds=margin_seconds)

    def __repr__(self) -> str:
        return "<TokenManager>"

    def _load(self, session: Session, connection_id: int) -> Connection:
        connection = session.get(Connection, connection_id, populate_existing=True)
        if connection is None or connection.status == ConnectionStatus.DISCONNECTED:
            raise NotConnected(f"connection {connection_id} is not connected")
        if connection.status == ConnectionStatus.NEEDS_REAUTH:
            raise NeedsReauth(f"connection {connection_id} needs re-authorization")
        if not connection.access_token_enc or not connection.refresh_token_enc:
            raise NotConnected(f"connection {connection_id} has no tokens")
        return connection

    @staticmethod
    def _fresh(refresh_at: datetime | None) -> bool:
        return refresh_at is not None and refresh_at > utcnow()

    def current(self, connection_id: int) -> tuple[str, datetime, int]:
        """(access token, expiry, generation), refreshed first when it is about to expire."""
        with self.db.session() as session:
            connection = self._load(session, connection_id)
            if self._fresh(connection.token_refresh_at):
                return (
                    self.cipher.decrypt(connection.access_token_enc or ""),
                    connection.token_refresh_at,  # type: ignore[return-value]
                    connection.token_generation,
                )
            generation = connection.token_generation
        return self.refresh(connection_id, seen_generation=generation)

    def refresh(
        self, connection_id: int, *, seen_generation: int | None
    ) -> tuple[str, datetime, int]:
        """Refresh once for everyone: whoever waits on the lock reuses the winner's token."""
        try:
            with held_lock(
                self.coordinator,
                locks.refresh_lock(connection_id),
                ttl=locks.REFRESH_LOCK_TTL,
                wait=locks.REFRESH_LOCK_TTL,
            ):
                return self._refresh_locked(connection_id, seen_generation)
        except LockNotAcquired:
            raise TokenRefreshUnavailable("timed out waiting for another refresh") from None

    def _refresh_locked(
        self, connection_id: int, seen_generation: int | None
    ) -> tuple[str, datetime, int]:
        revoked = False
        reason = NEEDS_REAUTH_REASON
        with self.db.session() as session:
            connection = self._load(session, connection_id)
            if connection.token_generation != seen_generation and self._fresh(
                connection.token_expires_at
            ):
                metrics.TOKEN_REFRESHES.labels("reused").inc()
                return (
                    self.cipher.decrypt(connection.access_token_enc or ""),
                    connection.token_refresh_at,  # type: ignore[return-value]
                    connection.token_generation,
                )
            refresh_token = self.cipher.decrypt(connection.refresh_token_enc or "")
            try:
                tokens = self.oauth.refresh(refresh_token)
            except OAuthFailure as exc:
                if not exc.grant_gone:
                    metrics.TOKEN_REFRESHES.labels("unavailable").inc()
                    raise TokenRefreshUnavailable(str(exc)) from None
                # We hold the lock and used the freshest stored token: the grant is gone.
                metrics.TOKEN_REFRESHES.labels("failed").inc()
                connection.status = ConnectionStatus.NEEDS_REAUTH
                reason = connection.status_reason = needs_reauth_reason(exc)
                outbox.record_status(session, connection, outbox.EventType.CONNECTION_NEEDS_REAUTH)
                revoked = True
            else:
                store_tokens(connection, tokens, self.cipher, self.margin.total_seconds())
                metrics.TOKEN_REFRESHES.labels("refreshed").inc()
                generation = connection.token_generation
                refresh_at = connection.token_refresh_at
            # Leaving the block commits: the rotated pair (or the needs_reauth status) is
            # durable before anyone uses the new token.
        if revoked:
            log.warning(
                "grant revoked; connection needs re-authorization",
                extra={"connection_id": connection_id},
            )
            raise NeedsReauth(reason)
        return tokens.access_token, refresh_at, generation  # type: ignore[return-value]

    def provider(self, connection_id: int) -> ConnectionTokens:
        return ConnectionTokens(self, connection_id)


class ConnectionTokens:
    """The TokenProvider a CloseClient uses for one connection (shared by its threads).

    The token is cached in memory until the refresh margin, so a sync of a thousand links reads
    the database for its token once, not a thousand times.
    """

    def __init__(self, manager: TokenManager, connection_id: int) -> None:
        self.manager = manager
        self.connection_id = connection_id
        self._lock = threading.Lock()
        self._cached: tuple[str, datetime, int] | None = None
        # Tokens this provider got by refreshing after a 401. Close refusing one of those too
        # refuses the connection, not the token: no second refresh (the calls that were in
        # flight with it would otherwise each refresh again).
        self._after_401: set[str] = set()

    def get(self) -> str:
        with self._lock:
            if self._cached is None or not self.manager._fresh(self._cached[1]):
                self._cached = self.manager.current(self.connection_id)
            return self._cached[0]

    def refresh_after_401(self, rejected: str) -> str:
        with self._lock:
            if rejected in self._after_401:
                raise CloseAuthError("Close rejected a freshly refreshed access token", status=401)
            if self._cached is not None and self._cached[0] != rejected:
                return self._cached[0]  # another thread already replaced it
            seen = self._cached[2] if self._cached else None
            self._cached = self.manager.refresh(self.connection_id, seen_generation=seen)
            self._after_401.add(self._cached[0])
            return self._cached[0]
