"""Entry into the sync: record a run and enqueue it after the commit, coalescing bursts."""

from __future__ import annotations

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from service.errors import Conflict
from service.infra import locks
from service.infra.models import Connection, RunStatus, SyncRun, Trigger
from service.services import Services


def enqueue_after_commit(
    session: Session, svc: Services, connection_id: int, trigger: str, run_id: int | None
) -> None:
    """Enqueue only once the rows the task needs are committed (never before: a worker would
    look for a run that does not exist yet); nothing is enqueued if the transaction rolls back."""

    def _enqueue(_session: Session) -> None:
        assert svc.enqueue is not None, "Services.enqueue is not configured"
        svc.enqueue(connection_id, trigger, run_id)

    event.listen(session, "after_commit", _enqueue, once=True)


def require_syncable(connection: Connection) -> None:
    """The one place that decides whether a connection may sync (the engine re-checks at run
    time, when the status may have changed since the request)."""
    if not connection.syncable:
        raise Conflict(f"the connection is {connection.status}, not active; it cannot sync")


def request_sync(
    session: Session, svc: Services, connection: Connection, trigger: Trigger | str
) -> SyncRun:
    """Record a queued run for an explicit request (connect, API, button, CLI) and enqueue it
    when the caller commits. The caller owns the transaction. Conflict when not syncable."""
    require_syncable(connection)
    run = SyncRun(connection_id=connection.id, trigger=str(trigger), status=RunStatus.QUEUED)
    session.add(run)
    session.flush()
    enqueue_after_commit(session, svc, connection.id, str(trigger), run.id)
    return run


def request_coalesced_sync(svc: Services, connection_id: int, trigger: Trigger | str) -> bool:
    """For bursts (webhooks): enqueue unless a sync for this connection is already waiting to
    start. A waiting task reads the source when it starts, so it will see this change too.
    Returns True when a task was enqueued."""
    if not svc.coordinator.set_flag(locks.pending_flag(connection_id), locks.PENDING_TTL):
        return False
    assert svc.enqueue is not None
    try:
        svc.enqueue(connection_id, str(trigger), None)
    except BaseException:
        # Nothing is waiting after all: clear the flag, or the next triggers would be dropped.
        svc.coordinator.pop_flag(locks.pending_flag(connection_id))
        raise
    return True


def request_team_follow_up(svc: Services, session: Session, account_id: str) -> bool:
    """A member's links appeared in or left Close (their run, their disconnect): resync the
    account's admin connection soon, coalesced, so its shared-link mappings switch between
    the member's own link and the assignment url without waiting for the schedule. Call it
    after the change is committed. Returns True when a run was enqueued."""
    admin = session.scalar(
        select(Connection).where(
            Connection.account_id == account_id, Connection.member_id.is_(None)
        )
    )
    if admin is None or not admin.syncable:
        return False
    return request_coalesced_sync(svc, admin.id, Trigger.TEAM)
