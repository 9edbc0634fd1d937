"""Gauges computed from the database at scrape time (two grouped queries, not one per row)."""

from __future__ import annotations

from sqlalchemy import func, select

from service import metrics
from service.container import Services
from service.models import Connection, ConnectionStatus, LinkState, SyncedLink


def refresh_gauges(svc: Services) -> None:
    with svc.db.session() as session:
        by_status = dict(
            session.execute(
                select(Connection.status, func.count()).group_by(Connection.status)
            ).all()
        )
        by_state = dict(
            session.execute(select(SyncedLink.state, func.count()).group_by(SyncedLink.state)).all()
        )
    for status in ConnectionStatus:
        metrics.CONNECTIONS.labels(status.value).set(by_status.get(status.value, 0))
    for state in LinkState:
        metrics.LINKS.labels(state.value).set(by_state.get(state.value, 0))
    if svc.redis is not None:
        try:
            metrics.QUEUE_DEPTH.set(float(svc.redis.llen("celery")))  # type: ignore[arg-type]
        except Exception:  # noqa: S110 - a scrape must not fail on the broker
            pass
