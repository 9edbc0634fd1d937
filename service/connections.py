"""Connection lifecycle: disconnect (and the shared lookup used by the entry points)."""

from __future__ import annotations

import logging

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from service.close.client import CloseError
from service.close.oauth import OAuthFailure
from service.container import Services
from service.coordination import LockNotAcquired, held_lock
from service.crypto import TokenDecryptError
from service.db import utcnow
from service.errors import Conflict, NotFound, UpstreamUnavailable
from service.models import Connection, ConnectionStatus, SyncedLink
from service.sync.engine import remove_close_links
from service.tokens import NeedsReauth, NotConnected, TokenRefreshUnavailable, wipe_tokens

log = logging.getLogger(__name__)

DISCONNECT_LOCK_WAIT = 15.0


def get_connection(session: Session, account_id: str) -> Connection:
    connection = session.scalar(select(Connection).where(Connection.account_id == account_id))
    if connection is None:
        raise NotFound(f"no connection for account {account_id!r}")
    return connection


def disconnect(svc: Services, connection_id: int, *, keep_links: bool) -> Connection:
    """Remove our links from Close (unless keep_links), revoke the grant, wipe the tokens and
    keep the connection as a disconnected record. Idempotent. Commits its own work."""
    try:
        # Hold the sync lock: a run must not re-create links while we remove them.
        with held_lock(
            svc.coordinator,
            f"sync:{connection_id}",
            ttl=float(svc.settings.SYNC_LOCK_TTL_SECONDS),
            wait=DISCONNECT_LOCK_WAIT,
        ):
            return _disconnect_locked(svc, connection_id, keep_links=keep_links)
    except LockNotAcquired:
        raise Conflict("a sync of this connection is running; try again in a minute") from None


def _disconnect_locked(svc: Services, connection_id: int, *, keep_links: bool) -> Connection:
    with svc.db.session() as session:
        connection = session.get(Connection, connection_id)
        if connection is None:
            raise NotFound(f"no connection {connection_id}")
        if connection.status == ConnectionStatus.DISCONNECTED:
            return connection
        has_grant = connection.status != ConnectionStatus.NEEDS_REAUTH
    note = None
    if not keep_links and has_grant:
        try:
            remove_close_links(svc, connection_id)
        except (NeedsReauth, NotConnected):
            note = "links could not be removed from Close: the grant was already revoked"
        except (CloseError, TokenRefreshUnavailable) as exc:
            raise UpstreamUnavailable(
                f"Close could not be reached to remove the links ({exc}); nothing was changed. "
                "Try again, or disconnect with keep_links=true."
            ) from None
    with svc.db.session() as session:
        connection = session.get(Connection, connection_id)
        assert connection is not None
        _revoke(svc, connection)
        wipe_tokens(connection)
        connection.status = ConnectionStatus.DISCONNECTED
        connection.status_reason = note or (
            "disconnected; links kept in Close" if keep_links else "disconnected"
        )
        connection.disconnected_at = utcnow()
        connection.next_sync_at = None
        connection.source_etag = None
        session.execute(delete(SyncedLink).where(SyncedLink.connection_id == connection_id))
        return connection


def _revoke(svc: Services, connection: Connection) -> None:
    """Revoke at Close; a failure is logged, never fatal (the tokens are wiped anyway)."""
    if not connection.refresh_token_enc:
        return
    try:
        svc.oauth.revoke(svc.cipher.decrypt(connection.refresh_token_enc))
    except (OAuthFailure, TokenDecryptError) as exc:
        log.warning(
            "revoking the Close grant failed; tokens wiped anyway",
            extra={"connection_id": connection.id, "reason": type(exc).__name__},
        )
