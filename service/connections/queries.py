"""The read side: every query the integrator API, the status page, the operator console and the
metrics gauges share. Plain functions of a session, each a constant number of SQL statements
whatever the number of links or runs (no lazy loads, no per-row queries)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, func, or_, select
from sqlalchemy.orm import Session

from service.errors import NotFound
from service.infra.models import (
    Connection,
    LinkState,
    RunStatus,
    SyncedLink,
    SyncRun,
    TeamMember,
)
from service.sync import coverage as team_coverage

ACTIVE_RUN_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING)


# Connections ---------------------------------------------------------------------------


def get_connection(session: Session, account_id: str) -> Connection:
    """The account's (admin) connection."""
    connection = find_connection(session, account_id)
    if connection is None:
        raise NotFound(f"no connection for account {account_id!r}")
    return connection


def find_connection(session: Session, account_id: str) -> Connection | None:
    """The account's (admin) connection, if any: member connections are never "the account's"."""
    return session.scalar(
        select(Connection).where(
            Connection.account_id == account_id, Connection.member_id.is_(None)
        )
    )


def find_member_connection(session: Session, account_id: str, member_id: str) -> Connection | None:
    return session.scalar(
        select(Connection).where(
            Connection.account_id == account_id, Connection.member_id == member_id
        )
    )


def get_member_connection(session: Session, account_id: str, member_id: str) -> Connection:
    connection = find_member_connection(session, account_id, member_id)
    if connection is None:
        raise NotFound(f"no connection for member {member_id!r} of account {account_id!r}")
    return connection


def member_invite(session: Session, account_id: str, member_id: str) -> dict[str, Any]:
    """What a member's connect page says: the member (from the roster, when listed) and the
    team (the admin connection's Close org)."""
    member = session.scalar(
        select(TeamMember).where(
            TeamMember.account_id == account_id, TeamMember.member_id == member_id
        )
    )
    admin = find_connection(session, account_id)
    team = (admin.close_org_name if admin else None) or account_id
    return {
        "member_id": member_id,
        "name": member.name if member else None,
        "email": member.email if member else None,
        "team": team,
        "admin_connected": admin is not None and admin.close_org_id is not None,
    }


def account_connections(session: Session, account_id: str) -> tuple[Connection, list[Connection]]:
    """The account's admin connection and its member connections, in one query (NotFound
    without an admin connection)."""
    rows = session.scalars(
        select(Connection)
        .where(Connection.account_id == account_id)
        .order_by(Connection.member_id.is_not(None), Connection.member_id)
    ).all()
    if not rows or rows[0].member_id is not None:
        raise NotFound(f"no connection for account {account_id!r}")
    return rows[0], list(rows[1:])


def member_connections(session: Session, account_id: str) -> Sequence[Connection]:
    """The account's member connections, by member id."""
    return session.scalars(
        select(Connection)
        .where(Connection.account_id == account_id, Connection.member_id.is_not(None))
        .order_by(Connection.member_id)
    ).all()


def connection_by_id(session: Session, connection_id: int) -> Connection:
    connection = session.get(Connection, connection_id)
    if connection is None:
        raise NotFound(f"There is no connection #{connection_id}.")
    return connection


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def search_connections(q: str, status: str) -> Select:
    """Connections matching a case-insensitive search (account id, Close user email, org
    name) and a status, newest first."""
    stmt = select(Connection)
    if q:
        pattern = f"%{_escape_like(q.lower())}%"
        stmt = stmt.where(
            or_(
                func.lower(Connection.account_id).like(pattern, escape="\\"),
                func.lower(Connection.close_user_email).like(pattern, escape="\\"),
                func.lower(Connection.close_org_name).like(pattern, escape="\\"),
            )
        )
    if status:
        stmt = stmt.where(Connection.status == status)
    return stmt.order_by(Connection.id.desc())


def paginate(
    session: Session, stmt: Select[Any], page: int, per_page: int
) -> tuple[list[tuple[Any, ...]], int]:
    """One page of `stmt`'s rows and the number of all matching rows, in one query (the total
    comes from a window function, so a page costs no separate COUNT)."""
    rows = session.execute(
        stmt.add_columns(func.count().over()).offset((page - 1) * per_page).limit(per_page)
    ).all()
    total = int(rows[0][-1]) if rows else 0
    return [tuple(row[:-1]) for row in rows], total


# Links ---------------------------------------------------------------------------------


def counts_by(session: Session, column: Any, *where: ColumnElement[bool]) -> dict[str, int]:
    """Rows per value of `column` (a status or state), in one grouped query."""
    stmt = select(column, func.count()).where(*where).group_by(column)
    return {str(key): int(n) for key, n in session.execute(stmt).all()}


def link_counts(session: Session, connection_id: int) -> dict[str, int]:
    """One connection's links by state."""
    return counts_by(session, SyncedLink.state, SyncedLink.connection_id == connection_id)


def link_counts_of(session: Session, connection_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """Links per state for each of these connections, in one grouped query."""
    counts: dict[int, dict[str, int]] = {cid: {} for cid in connection_ids}
    if connection_ids:
        for cid, state, n in session.execute(
            select(SyncedLink.connection_id, SyncedLink.state, func.count())
            .where(SyncedLink.connection_id.in_(connection_ids))
            .group_by(SyncedLink.connection_id, SyncedLink.state)
        ):
            counts[cid][str(state)] = int(n)
    return counts


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


def links_errors_first(connection_id: int) -> Select:
    """A connection's links, errors first (what a person opens the page for), then by name."""
    return (
        select(SyncedLink)
        .where(SyncedLink.connection_id == connection_id)
        .order_by(SyncedLink.state != LinkState.ERROR, SyncedLink.name, SyncedLink.source_id)
    )


def error_links() -> Select:
    """Links in error across the fleet with their account id, most recent first."""
    return (
        select(SyncedLink, Connection.account_id)
        .join(Connection, Connection.id == SyncedLink.connection_id)
        .where(SyncedLink.state == LinkState.ERROR)
        .order_by(SyncedLink.updated_at.desc(), SyncedLink.id.desc())
    )


# Runs ----------------------------------------------------------------------------------


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


def recent_runs(session: Session, connection_id: int, limit: int) -> Sequence[SyncRun]:
    return session.scalars(
        select(SyncRun)
        .where(SyncRun.connection_id == connection_id)
        .order_by(SyncRun.id.desc())
        .limit(limit)
    ).all()


def runs_by_id(session: Session, run_ids: Sequence[int]) -> Sequence[SyncRun]:
    if not run_ids:
        return []
    return session.scalars(select(SyncRun).where(SyncRun.id.in_(run_ids))).all()


def failed_runs() -> Select:
    """Failed and partial runs with their account id, newest first."""
    return (
        select(SyncRun, Connection.account_id)
        .join(Connection, Connection.id == SyncRun.connection_id)
        .where(SyncRun.status.in_([RunStatus.FAILED, RunStatus.PARTIAL]))
        .order_by(SyncRun.id.desc())
    )


def run_duration(run: SyncRun) -> float | None:
    if run.finished_at and run.started_at:
        return (run.finished_at - run.started_at).total_seconds()
    return None


def run_json(run: SyncRun, account_id: str | None = None) -> dict[str, Any]:
    """A run as the pages' scripts and the console's JSON endpoints see it."""
    return {
        "id": run.id,
        "connection_id": run.connection_id,
        "account_id": account_id,
        "trigger": run.trigger,
        "status": run.status,
        "active": run.status in ACTIVE_RUN_STATUSES,
        "done": run.progress_done,
        "total": run.progress_total,
        "created": run.created,
        "updated": run.updated,
        "deleted": run.deleted,
        "unchanged": run.unchanged,
        "failed": run.failed,
        "queued_at": run.queued_at.isoformat() if run.queued_at else None,
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "duration_seconds": run_duration(run),
        "error": run.error,
    }


# The fleet -----------------------------------------------------------------------------


def fleet_activity(session: Session, now: datetime) -> dict[str, Any]:
    """What the console's dashboard shows (and refreshes every 2 s): counts, runs of the last
    hour, the runs in progress with their progress, and the queue."""
    running = session.execute(
        select(SyncRun, Connection.account_id)
        .join(Connection, Connection.id == SyncRun.connection_id)
        .where(SyncRun.status == RunStatus.RUNNING)
        .order_by(SyncRun.id)
        .limit(50)
    ).all()
    queued, oldest = session.execute(
        select(func.count(), func.min(SyncRun.queued_at)).where(SyncRun.status == RunStatus.QUEUED)
    ).one()
    return {
        "connections": counts_by(session, Connection.status),
        "links": counts_by(session, SyncedLink.state),
        "last_hour": counts_by(
            session, SyncRun.status, SyncRun.queued_at >= now - timedelta(hours=1)
        ),
        "running": [run_json(run, account) for run, account in running],
        "queued": {"count": int(queued), "oldest": oldest.isoformat() if oldest else None},
    }


def fleet_counts(session: Session) -> tuple[dict[str, int], dict[str, int]]:
    """Connections by status and links by state (the Prometheus gauges), two grouped queries."""
    return counts_by(session, Connection.status), counts_by(session, SyncedLink.state)


# Teams ---------------------------------------------------------------------------------


def coverage(session: Session, account_id: str) -> dict[str, Any]:
    """Who of the account's team has links in Close (contract: product.md, "Coverage"): per
    member the email, the matched Close user or why none, the member connection, user links
    and shared mappings; totals. Computed by service.sync.coverage, which the
    coverage.changed events share."""
    return team_coverage.compute(session, get_connection(session, account_id))
