"""The periodic tick: find connections due for a sync and spread them over the tick.

Per tick: one SELECT of the connections whose durable sync request is still pending (a lost
wake-up: see service.sync.triggers) and one SELECT of the due rows (indexed on next_sync_at, bounded batch) and one
executemany UPDATE moving each to its next slot, whatever the number of connections. Each
connection keeps its own phase within the interval (next = its previous slot + interval), so
connections created together spread out, and a backlog after downtime is fanned out across the
tick instead of firing in one second.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update

from service.infra import locks
from service.infra.db import utcnow
from service.infra.models import Connection, ConnectionStatus
from service.services import Services

BATCH = 5000


@dataclass(frozen=True)
class Due:
    connection_id: int
    countdown: float  # seconds from now
    reconcile: bool


@dataclass(frozen=True)
class Pending:
    connection_id: int
    trigger: str
    reconcile: bool


def pending_requests(svc: Services, now: datetime | None = None) -> list[Pending]:
    """Connections with a durable sync request older than PENDING_REQUEST_GRACE and no run
    holding their lock: their wake-up was lost (broker down, Redis restarted, a run crashed).
    One indexed SELECT (ix_connections_sync_requested_at) and one lock lookup for the batch.
    """
    now = now or utcnow()
    cutoff = now - timedelta(seconds=locks.PENDING_REQUEST_GRACE)
    with svc.db.session() as session:
        rows = session.execute(
            select(
                Connection.id,
                Connection.sync_requested_trigger,
                Connection.sync_requested_reconcile,
            )
            .where(
                Connection.sync_requested_at < cutoff,
                Connection.status == ConnectionStatus.ACTIVE,
            )
            .order_by(Connection.sync_requested_at)
            .limit(BATCH)
        ).all()
    if not rows:
        return []
    running = svc.coordinator.held([locks.sync_lock(row.id) for row in rows])
    return [
        Pending(row.id, row.sync_requested_trigger or "manual", row.sync_requested_reconcile)
        for row in rows
        if locks.sync_lock(row.id) not in running
    ]


def due_connections(svc: Services, now: datetime | None = None) -> list[Due]:
    now = now or utcnow()
    settings = svc.settings
    tick = timedelta(seconds=settings.SCHEDULER_TICK_SECONDS)
    interval = timedelta(seconds=settings.SYNC_INTERVAL_SECONDS)
    horizon = now + tick
    rng = random.Random()  # noqa: S311 - jitter
    with svc.db.session() as session:
        rows = session.execute(
            select(Connection.id, Connection.next_sync_at, Connection.next_reconcile_at)
            .where(
                Connection.status == ConnectionStatus.ACTIVE,
                or_(Connection.next_sync_at.is_(None), Connection.next_sync_at < horizon),
            )
            .order_by(Connection.next_sync_at)
            .limit(BATCH)
        ).all()
        if not rows:
            return []
        overdue = [r for r in rows if r.next_sync_at is None or r.next_sync_at < now]
        spread = settings.SCHEDULER_TICK_SECONDS / max(len(overdue), 1)
        due: list[Due] = []
        updates: list[dict[str, object]] = []
        position = 0
        for row in rows:
            if row.next_sync_at is None:
                slot = now + timedelta(seconds=rng.uniform(0, settings.SYNC_INTERVAL_SECONDS))
                updates.append({"id": row.id, "next_sync_at": slot})
                continue  # a new phase, not a sync now
            if row.next_sync_at < now:
                countdown = position * spread
                position += 1
                # Keep the phase; skip whole intervals missed during downtime.
                missed = (now - row.next_sync_at) // interval + 1
                following = row.next_sync_at + interval * missed
            else:
                countdown = (row.next_sync_at - now).total_seconds()
                following = row.next_sync_at + interval
            reconcile = row.next_reconcile_at is None or row.next_reconcile_at <= now
            due.append(Due(row.id, countdown + rng.uniform(0, 0.5), reconcile))
            updates.append({"id": row.id, "next_sync_at": following})
        session.execute(update(Connection), updates)
    return due
