"""Events are written in the transaction of the change they report, by the code that makes the
change (engine, token manager, authorize, disconnect), against the real sandbox and source."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter
from sqlalchemy import select

from service.api.event_schemas import IntegratorEvent
from service.connections.disconnect import disconnect
from service.events.delivery import event_body
from service.infra import outbox
from service.infra.models import Connection, Event
from service.services import Services
from service.sync.runner import run_sync
from tests.conftest import new_account
from tests.events.conftest import Wakes
from tests.helpers import connect_directly, event_type

VALIDATE = TypeAdapter(IntegratorEvent)


def events_of(svc: Services, connection_id: int) -> list[Event]:
    with svc.db.session() as session:
        return list(
            session.scalars(
                select(Event).where(Event.connection_id == connection_id).order_by(Event.id)
            )
        )


def types(svc: Services, connection_id: int) -> list[str]:
    return [e.type for e in events_of(svc, connection_id)]


def check_documented(svc: Services, connection_id: int) -> None:
    """Every payload written matches the schema the OpenAPI document publishes."""
    for event in events_of(svc, connection_id):
        VALIDATE.validate_python(event_body(event))


def connected(svc: Services, sandbox: Any, source: Any, items: list[dict[str, Any]]) -> int:
    account = new_account()
    source.store.put_all(account, [dict(item, url=item["url"] + account) for item in items])
    return connect_directly(svc, sandbox, account)


def test_a_rollback_writes_no_event_and_a_commit_wakes_delivery_once(
    event_services: Services, sandbox: Any, source: Any, wakes: Wakes
) -> None:
    cid = connected(event_services, sandbox, source, [])
    with pytest.raises(RuntimeError), event_services.db.session() as session:
        connection = session.get(Connection, cid)
        assert connection is not None
        outbox.record_status(session, connection, outbox.EventType.CONNECTION_PAUSED)
        raise RuntimeError("the change failed")
    assert types(event_services, cid) == []
    assert wakes.count == 0
    with event_services.db.session() as session:
        connection = session.get(Connection, cid)
        assert connection is not None
        outbox.record_status(session, connection, outbox.EventType.CONNECTION_PAUSED)
    assert types(event_services, cid) == ["connection.paused"]
    assert wakes.count == 1


def test_link_errors_and_failed_syncs_are_reported_once_per_change(
    event_services: Services, sandbox: Any, source: Any
) -> None:
    account = new_account()
    good = event_type(1, account)
    bad = event_type(2, account, name="")  # invalid: the link fails, the others sync
    source.store.put_all(account, [good, bad])
    cid = connect_directly(event_services, sandbox, account)

    run_sync(event_services, cid, trigger="manual")
    assert types(event_services, cid) == ["links.errors_changed", "sync.failed"]
    changed, failed = events_of(event_services, cid)
    assert [link["source_id"] for link in changed.data["started_failing"]] == ["evt_2"]
    assert changed.data["stopped_failing"] == []
    assert failed.data["status"] == "partial"
    assert [link["source_id"] for link in failed.data["failing_links"]] == ["evt_2"]
    assert "invalid" in failed.data["failing_links"][0]["error"]

    # Nothing changed: no new event (the failing link was already reported).
    run_sync(event_services, cid, trigger="manual")
    assert types(event_services, cid) == ["links.errors_changed", "sync.failed"]

    source.store.put_all(account, [good, event_type(2, account)])  # fixed
    run_sync(event_services, cid, trigger="manual")
    assert types(event_services, cid)[2:] == ["links.errors_changed"]
    fixed = events_of(event_services, cid)[2]
    assert fixed.data["started_failing"] == []
    assert [link["source_id"] for link in fixed.data["stopped_failing"]] == ["evt_2"]
    assert fixed.data["failing_total"] == 0
    check_documented(event_services, cid)


def test_sync_completed_only_when_opted_in(
    make_settings: Any, sandbox: Any, source: Any, wakes: Wakes
) -> None:
    from service.infra import migrate
    from tests.conftest import RecordingEnqueue

    for opted_in in (False, True):
        settings = make_settings(INTEGRATOR_EVENTS_SYNC_COMPLETED=opted_in)
        migrate.upgrade(settings.database_url)
        svc = Services(settings, enqueue=RecordingEnqueue(), wake_events=wakes)
        try:
            account = new_account()
            source.store.put_all(account, [event_type(1, account)])
            cid = connect_directly(svc, sandbox, account)
            run_sync(svc, cid, trigger="manual")
            assert types(svc, cid) == (["sync.completed"] if opted_in else [])
            if opted_in:
                data = events_of(svc, cid)[0].data
                assert data["counts"]["created"] == 1
                check_documented(svc, cid)
        finally:
            svc.close()


def test_paused_needs_reauth_and_disconnected(
    event_services: Services, sandbox: Any, source: Any
) -> None:
    account = new_account()
    cid = connect_directly(event_services, sandbox, account)  # the source does not know it: 404
    run_sync(event_services, cid, trigger="manual")
    assert types(event_services, cid) == ["connection.paused", "sync.failed"]
    assert "404" in events_of(event_services, cid)[0].data["reason"]

    account2 = new_account()
    source.store.put_all(account2, [event_type(1, account2)])
    cid2 = connect_directly(event_services, sandbox, account2)
    sandbox.state.revoke_grant("user_jane")
    with event_services.db.session() as session:  # force the refresh path
        connection = session.get(Connection, cid2)
        assert connection is not None
        connection.token_refresh_at = connection.connected_at
    run_sync(event_services, cid2, trigger="manual")
    assert types(event_services, cid2)[0] == "connection.needs_reauth"

    disconnect(event_services, cid2, keep_links=True)
    assert types(event_services, cid2)[-1] == "connection.disconnected"
    assert events_of(event_services, cid2)[-1].data["links_kept"] is True
    check_documented(event_services, cid)
    check_documented(event_services, cid2)
