"""Read-side queries of the integrator API, each a constant number of SQL statements whatever
the number of links (no lazy loads, no per-row queries). Plain functions of a session."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.errors import NotFound
from service.models import Connection, SyncedLink, SyncRun


def link_counts(session: Session, connection_id: int) -> dict[str, int]:
    """Links by state, in one grouped query."""
    rows = session.execute(
        select(SyncedLink.state, func.count())
        .where(SyncedLink.connection_id == connection_id)
        .group_by(SyncedLink.state)
    )
    return {state: count for state, count in rows}


def links_page(
    session: Session, connection_id: int, *, after_id: int, limit: int
) -> tuple[Sequence[SyncedLink], int | None]:
    """One page of a connection's links in id order, and the cursor of the next page (the last
    id shown) or None at the end. Reads one row more than the page to know if there is more."""
    rows = session.scalars(
        select(SyncedLink)
        .where(SyncedLink.connection_id == connection_id, SyncedLink.id > after_id)
        .order_by(SyncedLink.id)
        .limit(limit + 1)
    ).all()
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1].id
    return rows, None


def sync_run(session: Session, run_id: int) -> tuple[SyncRun, str]:
    """A run and its account id, in one query."""
    row = session.execute(
        select(SyncRun, Connection.account_id)
        .join(Connection, Connection.id == SyncRun.connection_id)
        .where(SyncRun.id == run_id)
    ).first()
    if row is None:
        raise NotFound(f"no sync run {run_id}")
    return row[0], row[1]
