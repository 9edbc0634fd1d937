"""The scheduler tick: batched (constant SQL statements), spread, and phase-keeping."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from sqlalchemy import event, insert, select, update

from service.infra.db import utcnow
from service.infra.models import Connection, ConnectionStatus
from service.services import Services
from service.sync.scheduler import due_connections
from tests.conftest import new_account


@contextmanager
def counted_statements(svc: Services) -> Iterator[list[str]]:
    statements: list[str] = []

    def count(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    event.listen(svc.db.engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(svc.db.engine, "before_cursor_execute", count)


def add_due(svc: Services, count: int, *, overdue_by: float = 5.0) -> list[int]:
    now = utcnow()
    rows = [
        {
            "account_id": new_account(),
            "status": ConnectionStatus.ACTIVE,
            "next_sync_at": now - timedelta(seconds=overdue_by),
            "next_reconcile_at": now + timedelta(days=1),
            "token_generation": 1,
            "created_at": now,
            "updated_at": now,
        }
        for _ in range(count)
    ]
    with svc.db.session() as session:
        session.execute(insert(Connection), rows)
        ids = session.scalars(
            select(Connection.id).where(Connection.account_id.in_([r["account_id"] for r in rows]))
        ).all()
    return list(ids)


def clear_due(svc: Services) -> None:
    with svc.db.session() as session:
        session.execute(update(Connection).values(next_sync_at=utcnow() + timedelta(days=1)))


def test_tick_uses_the_same_number_of_statements_for_5_and_500(services: Services) -> None:
    clear_due(services)
    add_due(services, 5)
    with counted_statements(services) as small:
        assert len(due_connections(services)) == 5
    add_due(services, 500)
    with counted_statements(services) as large:
        assert len(due_connections(services)) == 500
    assert len(small) == len(large) <= 3, (small, large)


def test_due_connections_move_one_interval_on_and_are_spread(services: Services) -> None:
    clear_due(services)
    ids = add_due(services, 100, overdue_by=30)
    now = utcnow()
    due = due_connections(services, now)
    assert {d.connection_id for d in due} == set(ids)
    countdowns = sorted(d.countdown for d in due)
    tick = services.settings.SCHEDULER_TICK_SECONDS
    assert countdowns[0] < 1 and countdowns[-1] > tick * 0.8  # fanned out over the tick
    with services.db.session() as session:
        nexts = session.scalars(select(Connection.next_sync_at).where(Connection.id.in_(ids))).all()
    interval = services.settings.SYNC_INTERVAL_SECONDS
    assert all(n is not None and n > now and n <= now + timedelta(seconds=interval) for n in nexts)
    assert due_connections(services, now) == []  # not picked twice


def test_inactive_connections_are_not_scheduled(services: Services) -> None:
    clear_due(services)
    [cid] = add_due(services, 1)
    with services.db.session() as session:
        connection = session.get(Connection, cid)
        assert connection is not None
        connection.status = ConnectionStatus.NEEDS_REAUTH
    assert due_connections(services) == []
