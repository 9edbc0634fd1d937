"""Housekeeping (hourly): forget what no longer matters.

Kept: webhook deliveries 7 days (the de-duplication window); OAuth states until they expire;
connect links 30 days past expiry (the integrator may still look one up); manage sessions a
day past expiry or revocation (a late click still reads "expired", not "unknown"); events
INTEGRATOR_EVENTS_RETENTION_DAYS; finished sync runs 30 days, except each connection's last
run (its status names it). Unfinished runs are never deleted here."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Delete, delete, or_, select

from service.infra import outbox
from service.infra.db import utcnow
from service.infra.models import (
    Connection,
    ConnectSession,
    ManageSession,
    OAuthState,
    SyncRun,
    WebhookDelivery,
)
from service.services import Services

WEBHOOK_DELIVERIES_KEPT = timedelta(days=7)
CONNECT_SESSIONS_KEPT = timedelta(days=30)
MANAGE_SESSIONS_KEPT = timedelta(days=1)
SYNC_RUNS_KEPT = timedelta(days=30)


def clean_up(svc: Services) -> dict[str, int]:
    """Delete what is past its retention; returns how many rows of each kind went."""
    now = utcnow()
    gone: dict[str, int] = {}
    with svc.db.session() as session:

        def purge(kind: str, statement: Delete) -> None:
            result = cast(CursorResult[Any], session.execute(statement))
            gone[kind] = int(result.rowcount or 0)

        purge(
            "webhook_deliveries",
            delete(WebhookDelivery).where(
                WebhookDelivery.received_at < now - WEBHOOK_DELIVERIES_KEPT
            ),
        )
        purge("oauth_states", delete(OAuthState).where(OAuthState.expires_at < now))
        purge(
            "connect_sessions",
            delete(ConnectSession).where(ConnectSession.expires_at < now - CONNECT_SESSIONS_KEPT),
        )
        manage_cutoff = now - MANAGE_SESSIONS_KEPT
        purge(
            "manage_sessions",
            delete(ManageSession).where(
                or_(
                    ManageSession.expires_at < manage_cutoff,
                    ManageSession.revoked_at < manage_cutoff,
                )
            ),
        )
        last_runs = select(Connection.last_sync_run_id).where(
            Connection.last_sync_run_id.is_not(None)
        )
        purge(
            "sync_runs",
            delete(SyncRun).where(
                SyncRun.queued_at < now - SYNC_RUNS_KEPT,  # indexed; finished comes after
                SyncRun.finished_at.is_not(None),
                SyncRun.id.not_in(last_runs),
            ),
        )
        gone["events"] = outbox.delete_older_than(
            session, now - timedelta(days=svc.settings.INTEGRATOR_EVENTS_RETENTION_DAYS)
        )
    return gone
