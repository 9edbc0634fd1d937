"""The outbox of events to the integrator: recorded in the caller's transaction, so an event
exists exactly when the change it reports was committed (a rollback writes none).

Low in the layers on purpose: the sync engine, the token manager and the connection life cycle
all record here. Delivery (signed webhooks) and the feed live in service.events; this module
only writes rows and, after the commit that wrote some, calls the process's wake-up function
(installed on the session factory by service.services) so delivery starts at once. The beat
tick sweeps as well, so a lost wake-up (crash, broker outage) only delays an event.

Feed order: `events.id` is the feed cursor, so ids must become visible in commit order. On
PostgreSQL a sequence hands out ids in insert order, not commit order; a transaction-scoped
advisory lock taken before the insert serializes event writers until they commit (the writers
are short: the lock is taken just before the commit in every caller). SQLite serializes
writers anyway.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import delete, event, inspect, or_, select, text
from sqlalchemy.orm import Session, sessionmaker

from service.infra.models import (
    Connection,
    DeliveryState,
    Event,
    LinkState,
    ReportedLinkError,
    SyncedLink,
    SyncRun,
)

log = logging.getLogger(__name__)

WAKE_FLAG = "linksync_events_written"
ADVISORY_LOCK_KEY = 0x4C53_4556  # "LSEV": one lock for every event writer
FAILING_LINKS_LIMIT = 20  # links listed in sync.failed
CHANGED_LINKS_LIMIT = 50  # links listed in each list of links.errors_changed
ERROR_TEXT_LIMIT = 500


class EventType(StrEnum):
    CONNECTION_CONNECTED = "connection.connected"
    CONNECTION_RECONNECTED = "connection.reconnected"
    CONNECTION_NEEDS_REAUTH = "connection.needs_reauth"
    CONNECTION_PAUSED = "connection.paused"
    CONNECTION_DISCONNECTED = "connection.disconnected"
    SYNC_FAILED = "sync.failed"
    SYNC_COMPLETED = "sync.completed"  # opt-in: INTEGRATOR_EVENTS_SYNC_COMPLETED
    LINKS_ERRORS_CHANGED = "links.errors_changed"
    COVERAGE_CHANGED = "coverage.changed"  # emitted by the team feature


def new_uid() -> str:
    return "evt_" + secrets.token_hex(12)


def _serialize_writers(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        with session.no_autoflush:  # take the lock before this flush takes any row lock
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})


def record(
    session: Session,
    type: EventType | str,
    *,
    account_id: str,
    connection_id: int | None,
    data: dict[str, Any],
    member_id: str | None = None,
) -> Event:
    """Add one event to the caller's transaction (flushed, not committed)."""
    _serialize_writers(session)
    row = Event(
        uid=new_uid(),
        type=str(type),
        account_id=account_id,
        member_id=member_id,
        connection_id=connection_id,
        data=data,
        delivery_state=DeliveryState.PENDING,
        attempts=0,
    )
    session.add(row)
    session.flush()
    session.info[WAKE_FLAG] = True
    return row


def record_for(
    session: Session, type: EventType, connection: Connection, data: dict[str, Any]
) -> Event:
    if connection.id is None:
        session.flush()
    return record(
        session,
        type,
        account_id=connection.account_id,
        connection_id=connection.id,
        member_id=getattr(connection, "member_id", None),
        data=data,
    )


# The events of a connection's life ---------------------------------------------------------


def _identity(connection: Connection) -> dict[str, Any]:
    return {
        "close_user": {
            "id": connection.close_user_id,
            "name": connection.close_user_name,
            "email": connection.close_user_email,
        },
        "close_organization": {"id": connection.close_org_id, "name": connection.close_org_name},
    }


def record_connected(session: Session, connection: Connection) -> Event:
    """connection.connected for a new connection, connection.reconnected for a known one
    (call it after updating the row, before the flush: the row's history tells which)."""
    state = inspect(connection)
    if state.pending or state.transient:
        return record_for(
            session, EventType.CONNECTION_CONNECTED, connection, _identity(connection)
        )
    previous = state.attrs.status.history.deleted
    data = _identity(connection) | {
        "previous_status": str(previous[0]) if previous else str(connection.status)
    }
    return record_for(session, EventType.CONNECTION_RECONNECTED, connection, data)


def record_status(session: Session, connection: Connection, type: EventType) -> Event:
    """connection.needs_reauth / connection.paused, with the reason shown to the admin."""
    return record_for(session, type, connection, {"reason": connection.status_reason})


def record_disconnected(session: Session, connection: Connection, *, links_kept: bool) -> Event:
    session.execute(
        delete(ReportedLinkError).where(ReportedLinkError.connection_id == connection.id)
    )
    return record_for(
        session,
        EventType.CONNECTION_DISCONNECTED,
        connection,
        {"links_kept": links_kept, "reason": connection.status_reason},
    )


# The events of a sync run ------------------------------------------------------------------


def _error_text(value: str | None) -> str | None:
    return None if value is None else value[:ERROR_TEXT_LIMIT]


def record_run(
    session: Session, connection: Connection, run: SyncRun, *, sync_completed: bool
) -> list[Event]:
    """After a run (call it once the run's status is set on the connection, before the
    commit): links.errors_changed when a link started or stopped failing; then sync.failed
    for a failed or partial run, unless the previous run ended the same way with the same
    failing links (a failure that persists is reported once, not every resync); or, opted in,
    sync.completed for a run that succeeded."""
    events: list[Event] = []
    status_changed = _status_changed(connection)  # before any query autoflushes the history
    failing = {
        row.source_id: row
        for row in session.scalars(
            select(SyncedLink).where(
                SyncedLink.connection_id == connection.id,
                or_(SyncedLink.state == LinkState.ERROR, SyncedLink.last_error.is_not(None)),
            )
        )
    }
    reported = set(
        session.scalars(
            select(ReportedLinkError.source_id).where(
                ReportedLinkError.connection_id == connection.id
            )
        )
    )
    started = sorted(set(failing) - reported)
    stopped = sorted(reported - set(failing))
    if started or stopped:
        names = dict(
            session.execute(
                select(SyncedLink.source_id, SyncedLink.name).where(
                    SyncedLink.connection_id == connection.id,
                    SyncedLink.source_id.in_(stopped[:CHANGED_LINKS_LIMIT]),
                )
            ).all()
        )
        events.append(
            record_for(
                session,
                EventType.LINKS_ERRORS_CHANGED,
                connection,
                {
                    "started_failing": [
                        {
                            "source_id": sid,
                            "name": failing[sid].name,
                            "error": _error_text(failing[sid].last_error),
                        }
                        for sid in started[:CHANGED_LINKS_LIMIT]
                    ],
                    "stopped_failing": [
                        {"source_id": sid, "name": names.get(sid)}
                        for sid in stopped[:CHANGED_LINKS_LIMIT]
                    ],
                    "started_failing_total": len(started),
                    "stopped_failing_total": len(stopped),
                    "failing_total": len(failing),
                },
            )
        )
        if stopped:
            session.execute(
                delete(ReportedLinkError).where(
                    ReportedLinkError.connection_id == connection.id,
                    ReportedLinkError.source_id.in_(stopped),
                )
            )
        session.add_all(
            ReportedLinkError(connection_id=connection.id, source_id=sid) for sid in started
        )
    summary = {
        "run_id": run.id,
        "trigger": str(run.trigger),
        "status": str(run.status),
        "counts": {
            "created": run.created,
            "updated": run.updated,
            "deleted": run.deleted,
            "unchanged": run.unchanged,
            "failed": run.failed,
        },
    }
    if str(run.status) in ("failed", "partial") and (started or stopped or status_changed):
        listed = sorted(failing)[:FAILING_LINKS_LIMIT]
        summary |= {
            "error": _error_text(run.error),
            "failing_links": [
                {
                    "source_id": sid,
                    "name": failing[sid].name,
                    "state": str(failing[sid].state),
                    "error": _error_text(failing[sid].last_error),
                }
                for sid in listed
            ],
            "failing_links_total": len(failing),
        }
        events.append(record_for(session, EventType.SYNC_FAILED, connection, summary))
    elif sync_completed and str(run.status) == "succeeded":
        events.append(record_for(session, EventType.SYNC_COMPLETED, connection, summary))
    return events


def _status_changed(connection: Connection) -> bool:
    history = inspect(connection).attrs.last_sync_status.history
    if history.unchanged:
        return False
    return not history.deleted or history.deleted[0] != connection.last_sync_status


# Wake-up after commit, and retention ---------------------------------------------------------


def install_wake(factory: sessionmaker[Session], wake: Callable[[], None]) -> None:
    """Call `wake` after each commit (of a session from `factory`) that wrote events."""

    def _after_commit(session: Session) -> None:
        if session.info.pop(WAKE_FLAG, False):
            try:
                wake()
            except Exception:  # the beat's sweep delivers it a little later
                log.warning("could not wake the event delivery; the next sweep will deliver")

    def _after_rollback(session: Session) -> None:
        session.info.pop(WAKE_FLAG, None)

    event.listen(factory, "after_commit", _after_commit)
    event.listen(factory, "after_rollback", _after_rollback)


def delete_older_than(session: Session, cutoff: datetime) -> int:
    """Retention: forget events (and their attempts) created before `cutoff`."""
    result = session.execute(delete(Event).where(Event.created_at < cutoff))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
