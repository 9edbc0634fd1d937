"""Runs syncs of one connection one at a time, across every worker process.

A per-connection lock (TTL + heartbeat) makes runs exclusive. A trigger that arrives while a
run holds the lock sets a "dirty" flag; the holder sees it when it finishes and runs exactly
once more, so the change that arrived mid-run is never lost and a burst never stacks up runs.

The durable request (`connections.sync_requested_at`, see service.sync.triggers) is the
source of truth behind both: a run claims it just before reading the source (compare-and-clear
on the timestamp, so a newer request survives), the holder runs once more while one is still
pending, and a run that crashes on the infrastructure (database or Redis gone mid-run) puts
its request back, slightly in the future, so the scheduler tick re-sends it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update

from service.infra import locks
from service.infra.coordination import Heartbeat
from service.infra.db import utcnow
from service.infra.models import Connection, RunStatus, SyncRun
from service.services import Services
from service.sync.engine import engine_for
from service.sync.triggers import request_team_follow_up

log = logging.getLogger(__name__)


class SyncBusy(Exception):
    """Another worker holds this connection's sync lock; the dirty flag has been set."""


@dataclass(frozen=True)
class Claim:
    run_id: int
    requested_at: datetime | None  # the request this run satisfies (None: none was pending)
    reconcile: bool


def claim_run(svc: Services, connection_id: int, trigger: str, run_id: int | None) -> Claim | None:
    """Pick the run row to execute and clear the pending request it satisfies, in one
    transaction, just before the source is read.

    The run is the task's own when still queued, else the oldest queued run of this
    connection (an API request whose wake-up was lost), else a new one; the other queued runs
    are merged into it. None when the task's run was already executed by another task and
    nothing is pending any more: the work is done."""
    with svc.db.session() as session:
        pending = session.execute(
            select(Connection.sync_requested_at, Connection.sync_requested_reconcile).where(
                Connection.id == connection_id
            )
        ).first()
        requested_at = pending.sync_requested_at if pending else None
        queued = list(
            session.scalars(
                select(SyncRun)
                .where(SyncRun.connection_id == connection_id, SyncRun.status == RunStatus.QUEUED)
                .order_by(SyncRun.id)
            )
        )
        own = next((r for r in queued if r.id == run_id), None)
        if run_id is not None and own is None and requested_at is None:
            return None
        run = own or (queued[0] if queued else None)
        if run is None:
            run = SyncRun(connection_id=connection_id, trigger=trigger, status=RunStatus.QUEUED)
            session.add(run)
            session.flush()
        for other in queued:
            if other is not run:
                other.status = RunStatus.COALESCED
                other.finished_at = utcnow()
                other.error = f"merged into run {run.id}"
        if requested_at is not None:
            session.execute(
                update(Connection)
                .where(
                    Connection.id == connection_id,
                    Connection.sync_requested_at == requested_at,
                )
                .values(
                    sync_requested_at=None,
                    sync_requested_trigger=None,
                    sync_requested_reconcile=False,
                )
            )
        return Claim(run.id, requested_at, bool(pending and pending.sync_requested_reconcile))


def request_pending(svc: Services, connection_id: int) -> bool:
    """Whether a request arrived after the last claim (its run still owes one more)."""
    with svc.db.session() as session:
        at = session.scalar(
            select(Connection.sync_requested_at).where(Connection.id == connection_id)
        )
    return at is not None and at <= utcnow()


def restore_request(svc: Services, connection_id: int, trigger: str, claim: Claim | None) -> None:
    """A run ended with work still owed: put its request back, RETRY_FAILED_RUN_AFTER in
    the future, so the scheduler tick re-sends it (a newer request is kept as it is).
    Best effort: the database may still be away; the task's retry is the other path."""
    if claim is None or claim.requested_at is None:
        return
    retry_at = utcnow() + timedelta(seconds=locks.RETRY_FAILED_RUN_AFTER)
    with contextlib.suppress(Exception), svc.db.session() as session:
        session.execute(
            update(Connection)
            .where(Connection.id == connection_id, Connection.sync_requested_at.is_(None))
            .values(
                sync_requested_at=retry_at,
                sync_requested_trigger=trigger,
                sync_requested_reconcile=claim.reconcile,
            )
        )


def abandon_stale_runs(svc: Services, connection_id: int) -> None:
    """Runs left 'running' by a worker that died. Called with the lock held, when no other
    run of this connection can really be running."""
    with svc.db.session() as session:
        session.execute(
            update(SyncRun)
            .where(SyncRun.connection_id == connection_id, SyncRun.status == RunStatus.RUNNING)
            .values(
                status=RunStatus.FAILED,
                finished_at=utcnow(),
                error="abandoned: the worker running it stopped; a later run finished the work",
            )
        )


def mark_coalesced(svc: Services, run_id: int, reason: str) -> None:
    with svc.db.session() as session:
        run = session.get(SyncRun, run_id)
        if run is not None and run.status == RunStatus.QUEUED:
            run.status = RunStatus.COALESCED
            run.finished_at = utcnow()
            run.error = reason


def run_sync(
    svc: Services,
    connection_id: int,
    *,
    trigger: str,
    run_id: int | None = None,
    reconcile: bool = False,
    skip_if_running: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
    on_phase: Callable[[str, int], None] | None = None,
) -> list[int]:
    """Run (and re-run while dirty) a sync of this connection; return the run ids executed.

    Raises SyncBusy when another worker holds the lock (after flagging it dirty, unless
    `skip_if_running`: a scheduled tick does not stack a run behind a running one)."""
    coordinator = svc.coordinator
    ttl = locks.sync_lock_ttl(svc.settings)
    executed: list[int] = []
    engine = engine_for(svc, on_progress=on_progress, on_phase=on_phase)
    while True:
        token = coordinator.try_acquire(locks.sync_lock(connection_id), ttl)
        if token is None:
            if executed:
                return executed  # someone else took over the follow-up run
            if not skip_if_running:
                coordinator.set_flag(locks.dirty_flag(connection_id), locks.dirty_ttl(svc.settings))
            raise SyncBusy(connection_id)
        try:
            with Heartbeat(coordinator, locks.sync_lock(connection_id), token, ttl):
                abandon_stale_runs(svc, connection_id)
                while True:
                    # Anything that arrives from here on must cause one more run.
                    coordinator.pop_flag(locks.pending_flag(connection_id))
                    coordinator.pop_flag(locks.dirty_flag(connection_id))
                    claim = claim_run(svc, connection_id, trigger, run_id)
                    if claim is None:
                        log.info("the work of this task was done by another run")
                        return executed
                    try:
                        run = engine.run(
                            connection_id, claim.run_id, reconcile=reconcile or claim.reconcile
                        )
                    except Exception:
                        restore_request(svc, connection_id, trigger, claim)
                        raise
                    if run.retry_owed:
                        # A temporary failure (Close, the source, the coordinator or the
                        # database was away): the work is still owed, so the request goes
                        # back and the scheduler re-runs it soon.
                        restore_request(svc, connection_id, trigger, claim)
                    executed.append(claim.run_id)
                    _follow_up_team(svc, connection_id, claim.run_id)
                    run_id, reconcile = None, False
                    dirty = coordinator.pop_flag(locks.dirty_flag(connection_id))
                    if not dirty and not request_pending(svc, connection_id):
                        break
                    log.info("changes arrived during the run; running once more")
        finally:
            with contextlib.suppress(Exception):  # the TTL frees it if the store is gone
                coordinator.release(locks.sync_lock(connection_id), token)
        # A trigger may have flagged dirty between our last check and the release: go again.
        if not coordinator.pop_flag(locks.dirty_flag(connection_id)):
            return executed


def _follow_up_team(svc: Services, connection_id: int, run_id: int) -> None:
    """After a member's run that created or deleted links in Close, the admin connection's
    mappings for that member change target: ask for its coalesced run."""
    with svc.db.session() as session:
        row = session.execute(
            select(Connection.account_id, Connection.member_id, SyncRun.created, SyncRun.deleted)
            .join(SyncRun, SyncRun.connection_id == Connection.id)
            .where(Connection.id == connection_id, SyncRun.id == run_id)
        ).first()
        if row is None or row.member_id is None or not (row.created or row.deleted):
            return
        try:
            request_team_follow_up(svc, session, row.account_id)
        except Exception:  # the schedule catches up; never fail the member's run for this
            log.warning("could not request the admin connection's follow-up run", exc_info=True)


def is_dirty(svc: Services, connection_id: int) -> bool:
    """Whether a follow-up run is still owed (used by a busy task's delayed retry)."""
    return svc.coordinator.has_flag(locks.dirty_flag(connection_id))
