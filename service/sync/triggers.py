"""Entry into the sync: record a run and enqueue it after the commit, coalescing bursts."""

from __future__ import annotations

from sqlalchemy import event
from sqlalchemy.orm import Session

from service.container import Services
from service.models import Connection, RunStatus, SyncRun, Trigger

PENDING_TTL_SECONDS = 60.0


def enqueue_after_commit(
    session: Session, svc: Services, connection_id: int, trigger: str, run_id: int | None
) -> None:
    """Enqueue only once the rows the task needs are committed (never before: a worker would
    look for a run that does not exist yet); nothing is enqueued if the transaction rolls back."""

    def _enqueue(_session: Session) -> None:
        assert svc.enqueue is not None, "Services.enqueue is not configured"
        svc.enqueue(connection_id, trigger, run_id)

    event.listen(session, "after_commit", _enqueue, once=True)


def request_sync(
    session: Session, svc: Services, connection: Connection, trigger: Trigger | str
) -> SyncRun:
    """Record a queued run for an explicit request (connect, API, button, CLI) and enqueue it
    when the caller commits. The caller owns the transaction."""
    run = SyncRun(connection_id=connection.id, trigger=str(trigger), status=RunStatus.QUEUED)
    session.add(run)
    session.flush()
    enqueue_after_commit(session, svc, connection.id, str(trigger), run.id)
    return run


def request_coalesced_sync(svc: Services, connection_id: int, trigger: Trigger | str) -> bool:
    """For bursts (webhooks): enqueue unless a sync for this connection is already waiting to
    start. A waiting task reads the source when it starts, so it will see this change too.
    Returns True when a task was enqueued."""
    if not svc.coordinator.set_flag(f"pending:{connection_id}", PENDING_TTL_SECONDS):
        return False
    assert svc.enqueue is not None
    try:
        svc.enqueue(connection_id, str(trigger), None)
    except BaseException:
        # Nothing is waiting after all: clear the flag, or the next triggers would be dropped.
        svc.coordinator.pop_flag(f"pending:{connection_id}")
        raise
    return True
