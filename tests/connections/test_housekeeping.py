"""The hourly housekeeping on SQLite and PostgreSQL: each kind of row goes once it is past its
retention and not before; a connection's last run and unfinished runs always stay."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from service.connections.housekeeping import clean_up
from service.infra.db import utcnow
from service.infra.models import (
    Connection,
    ConnectSession,
    Event,
    ManageSession,
    OAuthState,
    RunStatus,
    SyncRun,
    WebhookDelivery,
)
from service.services import Services
from tests.conftest import new_account


def test_housekeeping_forgets_only_what_is_past_its_retention(services: Services) -> None:
    now = utcnow()
    days = timedelta(days=1)
    account = new_account()
    with services.db.session() as session:
        connection = Connection(account_id=account)
        session.add(connection)
        session.flush()
        cid = connection.id

        def run(age: timedelta, status: RunStatus = RunStatus.SUCCEEDED) -> SyncRun:
            finished = None if status in (RunStatus.QUEUED, RunStatus.RUNNING) else now - age
            row = SyncRun(
                connection_id=cid,
                trigger="schedule",
                status=status,
                queued_at=now - age,
                finished_at=finished,
            )
            session.add(row)
            return row

        old_run, recent_run = run(40 * days), run(2 * days)
        stuck_run = run(40 * days, RunStatus.RUNNING)  # unfinished: never purged here
        last_run = run(45 * days)  # the connection's last run: its status names it
        session.flush()
        connection.last_sync_run_id = last_run.id
        runs = {
            "old": old_run.id,
            "recent": recent_run.id,
            "stuck": stuck_run.id,
            "last": last_run.id,
        }
        session.add_all(
            [
                WebhookDelivery(event_id=f"{account}-old", account_id=account, event_type="x"),
                WebhookDelivery(event_id=f"{account}-new", account_id=account, event_type="x"),
                ConnectSession(
                    id=f"{account}-c-old", account_id=account, expires_at=now - 31 * days
                ),
                ConnectSession(
                    id=f"{account}-c-new", account_id=account, expires_at=now - 2 * days
                ),
                ManageSession(id=f"{account}-m-old", connection_id=cid, expires_at=now - 2 * days),
                ManageSession(
                    id=f"{account}-m-revoked",
                    connection_id=cid,
                    expires_at=now + 10 * days,
                    revoked_at=now - 2 * days,
                ),
                ManageSession(id=f"{account}-m-live", connection_id=cid, expires_at=now + days),
                Event(uid=f"{account}-e-old", type="sync.failed", account_id=account, data={}),
                Event(uid=f"{account}-e-new", type="sync.failed", account_id=account, data={}),
            ]
        )
        session.flush()
        session.add(
            OAuthState(
                state=f"{account}-s-old",
                connect_session_id=f"{account}-c-new",
                browser_binding="b",
                expires_at=now - timedelta(minutes=1),
            )
        )
        session.add(
            OAuthState(
                state=f"{account}-s-new",
                connect_session_id=f"{account}-c-new",
                browser_binding="b",
                expires_at=now + timedelta(minutes=9),
            )
        )
        session.flush()
        old_delivery = session.scalar(
            select(WebhookDelivery).where(WebhookDelivery.event_id == f"{account}-old")
        )
        assert old_delivery is not None
        old_delivery.received_at = now - 8 * days
        old_event = session.scalar(select(Event).where(Event.uid == f"{account}-e-old"))
        assert old_event is not None
        old_event.created_at = now - timedelta(
            days=services.settings.INTEGRATOR_EVENTS_RETENTION_DAYS + 1
        )

    gone = clean_up(services)

    with services.db.session() as session:
        kept_runs = set(
            session.scalars(select(SyncRun.id).where(SyncRun.connection_id == cid)).all()
        )
        assert kept_runs == {runs["recent"], runs["stuck"], runs["last"]}

        def names(column: Any, prefix: str) -> set[str]:
            return set(session.scalars(select(column).where(column.like(f"{prefix}%"))).all())

        assert names(WebhookDelivery.event_id, account) == {f"{account}-new"}
        assert names(ConnectSession.id, account) == {f"{account}-c-new"}
        assert names(ManageSession.id, account) == {f"{account}-m-live"}
        assert names(OAuthState.state, account) == {f"{account}-s-new"}
        assert names(Event.uid, account) == {f"{account}-e-new"}
    assert gone["sync_runs"] >= 1 and gone["manage_sessions"] >= 2 and gone["events"] >= 1

    # Run again: nothing more of ours goes.
    clean_up(services)
    with services.db.session() as session:
        assert (
            session.scalar(
                select(func.count()).select_from(SyncRun).where(SyncRun.connection_id == cid)
            )
            == 3
        )
