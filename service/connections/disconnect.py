"""Ending a connection's life in Close: disconnect, and removing our links from Close (on
disconnect, or when an account reconnects as another Close user)."""

from __future__ import annotations

import logging

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from service.close.client import CloseError
from service.close.oauth import OAuthFailure
from service.close.tokens import NeedsReauth, NotConnected, TokenRefreshUnavailable, wipe_tokens
from service.errors import Conflict, NotFound, UpstreamUnavailable
from service.infra import locks, outbox
from service.infra.coordination import LockNotAcquired, held_lock
from service.infra.crypto import TokenDecryptError
from service.infra.db import utcnow
from service.infra.models import Connection, ConnectionStatus, SharedLink, SyncedLink
from service.services import Services
from service.sync import coverage as team_coverage
from service.sync.triggers import request_team_follow_up

log = logging.getLogger(__name__)


def disconnect(svc: Services, connection_id: int, *, keep_links: bool) -> Connection:
    """Remove our links from Close (unless keep_links; for the admin connection of a team, our
    shared links too), revoke the grant, wipe the tokens and keep the connection as a
    disconnected record. With keep_links the shared-link records stay, so connecting again
    adopts those shared links instead of making second ones. A member's disconnect asks for
    the admin's follow-up run (its mappings return to the assignment urls). Idempotent.
    Commits its own work."""
    try:
        # Hold the sync lock: a run must not re-create links while we remove them.
        with held_lock(
            svc.coordinator,
            locks.sync_lock(connection_id),
            ttl=locks.sync_lock_ttl(svc.settings),
            wait=locks.DISCONNECT_LOCK_WAIT,
        ):
            connection = _disconnect_locked(svc, connection_id, keep_links=keep_links)
    except LockNotAcquired:
        raise Conflict("a sync of this connection is running; try again in a minute") from None
    if connection.member_id is not None:
        # The member's links are gone (or no longer ours to keep): the admin's mappings for
        # them go back to the assignment url on its next run, which this asks for now.
        with svc.db.session() as session:
            request_team_follow_up(svc, session, connection.account_id)
    return connection


def _disconnect_locked(svc: Services, connection_id: int, *, keep_links: bool) -> Connection:
    with svc.db.session() as session:
        connection = session.get(Connection, connection_id)
        if connection is None:
            raise NotFound(f"no connection {connection_id}")
        if connection.status == ConnectionStatus.DISCONNECTED:
            return connection
        has_grant = connection.status != ConnectionStatus.NEEDS_REAUTH
        is_admin = connection.member_id is None
    note = None
    if not keep_links and has_grant:
        try:
            if is_admin:
                remove_shared_links(svc, connection_id)
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
        revoke_grant(svc, connection)
        wipe_tokens(connection)
        connection.status = ConnectionStatus.DISCONNECTED
        connection.status_reason = note or (
            "disconnected; links kept in Close" if keep_links else "disconnected"
        )
        connection.disconnected_at = utcnow()
        connection.next_sync_at = None
        connection.source_etag = None
        session.execute(delete(SyncedLink).where(SyncedLink.connection_id == connection_id))
        outbox.record_disconnected(session, connection, links_kept=keep_links)
        if connection.member_id is not None:
            team_coverage.record_changed(
                session,
                connection.account_id,
                {connection.member_id: team_coverage.Change.DISCONNECTED},
                connection_id=connection.id,
            )
        return connection


def revoke_grant(svc: Services, connection: Connection) -> None:
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


def remove_close_links(svc: Services, connection_id: int, session: Session | None = None) -> int:
    """Delete every link of ours for this connection from Close (disconnect, user change).
    Returns how many Close deleted. Rows are removed as each delete is confirmed: committed one
    by one in a session of its own, or flushed into the caller's `session` (its transaction)."""
    if session is not None:
        return _remove_links(svc, connection_id, session, commit=False)
    with svc.db.session() as own:
        return _remove_links(svc, connection_id, own, commit=True)


def remove_shared_links(svc: Services, connection_id: int) -> int:
    """Delete the account's shared links of ours from Close with the admin connection's token
    (their mappings go with them), and forget them: each row is removed, and committed, as
    Close confirms its delete. Shared links we did not create are never touched. Member
    connections are the members' own grants: they stay. Returns how many Close deleted."""
    removed = 0
    with svc.db.session() as session:
        connection = session.get(Connection, connection_id)
        if connection is None or connection.member_id is not None:
            return 0
        close = svc.close_for(connection)
        for row in session.scalars(
            select(SharedLink).where(SharedLink.account_id == connection.account_id)
        ).all():
            if row.close_shared_id and close.delete_shared_link(row.close_shared_id):
                removed += 1
            session.delete(row)  # its mappings with it (cascade)
            session.commit()
    return removed


def _remove_links(svc: Services, connection_id: int, session: Session, *, commit: bool) -> int:
    connection = session.get(Connection, connection_id)
    if connection is None:
        return 0
    close = svc.close_for(connection)
    removed = 0
    rows = session.scalars(
        select(SyncedLink).where(SyncedLink.connection_id == connection_id)
    ).all()
    for row in rows:
        if row.may_be_in_close and close.delete_integration_link(row.source_id):
            removed += 1
        session.delete(row)
        if commit:
            session.commit()  # record each confirmed delete: a failure later loses nothing
        else:
            session.flush()
    return removed
