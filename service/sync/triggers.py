"""Entry into the sync: record the request durably, then wake a worker after the commit.

Every path that answers 202 (API, webhook, status page, console, connect) marks the
connection in the same transaction (`connections.sync_requested_at`): that row is the promise.
The broker message sent after the commit is only a wake-up. When the broker is down at that
moment the request still succeeds: the failure is logged and counted, and the scheduler tick
re-sends a wake-up for every request still pending (service.sync.scheduler). A worker clears
the request when a run starts reading the source, comparing the timestamp so that a request
that arrives mid-run stays pending and causes one more run.
"""

from __future__ import annotations

import contextlib
import logging

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from service.errors import Conflict
from service.infra import locks, metrics
from service.infra.db import utcnow
from service.infra.models import Connection, RunStatus, SyncRun, Trigger
from service.services import Services

log = logging.getLogger(__name__)


def mark_requested(
    connection: Connection, trigger: Trigger | str, *, reconcile: bool = False
) -> None:
    """Record, in the caller's transaction, that this connection needs a sync. A newer
    request moves the timestamp forward; reconcile is sticky until a run clears it."""
    connection.sync_requested_at = utcnow()
    connection.sync_requested_trigger = str(trigger)
    connection.sync_requested_reconcile = bool(
        connection.sync_requested_reconcile or reconcile or trigger == Trigger.RECONCILE
    )


def wake(svc: Services, connection_id: int, trigger: str, run_id: int | None) -> bool:
    """Send the wake-up; never raise. The request is already durable, so a broker that is down
    only delays the sync until the scheduler tick re-sends it. Returns whether it was sent."""
    assert svc.enqueue is not None, "Services.enqueue is not configured"
    try:
        svc.enqueue(connection_id, trigger, run_id)
    except Exception as exc:
        metrics.ENQUEUE_FAILURES.labels(trigger).inc()
        log.warning(
            "could not send the sync wake-up; the scheduler will re-send it",
            extra={"connection_id": connection_id, "error": type(exc).__name__},
        )
        return False
    return True


def enqueue_after_commit(
    session: Session, svc: Services, connection_id: int, trigger: str, run_id: int | None
) -> None:
    """Wake a worker only once the rows the task needs are committed (never before: a worker
    would look for a run that does not exist yet); nothing is sent if the transaction rolls
    back."""

    def _enqueue(_session: Session) -> None:
        wake(svc, connection_id, trigger, run_id)

    event.listen(session, "after_commit", _enqueue, once=True)


def require_syncable(connection: Connection) -> None:
    """The one place that decides whether a connection may sync (the engine re-checks at run
    time, when the status may have changed since the request)."""
    if not connection.syncable:
        raise Conflict(f"the connection is {connection.status}, not active; it cannot sync")


def request_sync(
    session: Session, svc: Services, connection: Connection, trigger: Trigger | str
) -> SyncRun:
    """Record a queued run and the durable request for an explicit request (connect, API,
    console, CLI) and wake a worker when the caller commits. The caller owns the transaction.
    Conflict when not syncable."""
    require_syncable(connection)
    run = SyncRun(connection_id=connection.id, trigger=str(trigger), status=RunStatus.QUEUED)
    session.add(run)
    mark_requested(connection, trigger)
    session.flush()
    enqueue_after_commit(session, svc, connection.id, str(trigger), run.id)
    return run


def request_coalesced_sync(
    session: Session, svc: Services, connection: Connection, trigger: Trigger | str
) -> None:
    """For bursts (webhooks, the status page's button): record the durable request in the
    caller's transaction and, after its commit, wake a worker unless a sync for this
    connection is already waiting to start (a waiting task reads the source when it starts,
    so it sees this change too)."""
    require_syncable(connection)
    mark_requested(connection, trigger)
    connection_id = connection.id

    def _wake(_session: Session) -> None:
        wake_coalesced(svc, connection_id, str(trigger))

    event.listen(session, "after_commit", _wake, once=True)


def wake_coalesced(svc: Services, connection_id: int, trigger: str) -> bool:
    """Send a wake-up unless one is already waiting (the pending flag). Never raises: the
    request is durable already. Returns True when a task was sent."""
    flag = locks.pending_flag(connection_id)
    try:
        if not svc.coordinator.set_flag(flag, locks.PENDING_TTL):
            return False
    except Exception:
        log.warning("coordinator unavailable; sending the wake-up anyway", exc_info=True)
    if wake(svc, connection_id, trigger, None):
        return True
    # Nothing is waiting after all: clear the flag, or the next triggers would be dropped.
    with contextlib.suppress(Exception):
        svc.coordinator.pop_flag(flag)
    return False


def request_team_follow_up(svc: Services, session: Session, account_id: str) -> bool:
    """A member's links appeared in or left Close (their run, their disconnect): resync the
    account's admin connection soon, coalesced, so its shared-link mappings switch between
    the member's own link and the assignment url without waiting for the schedule. Records
    the durable request in `session` (the caller commits); the wake-up follows the commit.
    Returns False when there is no syncable admin connection."""
    admin = session.scalar(
        select(Connection).where(
            Connection.account_id == account_id, Connection.member_id.is_(None)
        )
    )
    if admin is None or not admin.syncable:
        return False
    request_coalesced_sync(session, svc, admin, Trigger.TEAM)
    return True
