"""Re-authorization through the real OAuth flow: a second account for one Close user is
refused, a reconnect revokes the grant it replaces, a move to another org leaves the old org
clean, and the first sync after any connect is a reconcile."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from service.infra.models import Connection, SyncRun
from service.services import Services
from service.sync.runner import run_sync
from tests.conftest import RecordingEnqueue
from tests.connections.test_connect_flow import Browser
from tests.helpers import event_type, our_links


@pytest.fixture
def browser(services: Services) -> Browser:
    return Browser(services)


def connect(browser: Browser, token: str, user: str = "user_jane", org: str = "orga_acme") -> Any:
    return browser.client.get(browser.consent(browser.start(token), user=user, org=org))


def connection_of(svc: Services, account: str) -> Connection | None:
    with svc.db.session() as session:
        connection = session.scalar(select(Connection).where(Connection.account_id == account))
        if connection is not None:
            session.expunge(connection)
        return connection


def live_grants(sandbox: Any, user: str = "user_jane") -> list[Any]:
    return [g for g in sandbox.state.grants.values() if g.user_id == user and not g.revoked]


def run_enqueued(svc: Services, enqueued: RecordingEnqueue) -> SyncRun:
    connection_id, trigger, run_id = enqueued.calls[-1]
    run_sync(svc, connection_id, trigger=trigger, run_id=run_id)
    with svc.db.session() as session:
        run = session.get(SyncRun, run_id)
        assert run is not None
        session.expunge(run)
        return run


def test_a_second_account_for_the_same_close_user_is_refused_naming_the_first(
    browser: Browser, sandbox: Any, source: Any, enqueued: RecordingEnqueue
) -> None:
    first, first_token = browser.new_connect()
    source.store.put_all(first, [event_type(1, first), event_type(2, first)])
    connect(browser, first_token)
    assert run_enqueued(browser.svc, enqueued).created == 2
    before = connection_of(browser.svc, first)
    assert before is not None
    [first_grant] = live_grants(sandbox)

    second, second_token = browser.new_connect()
    source.store.put_all(second, [event_type(9, second)])
    calls_before = len(enqueued.calls)
    response = connect(browser, second_token)
    page = response.get_data(as_text=True)
    assert response.status_code == 409
    assert first in page and "already connected" in page
    assert "Traceback" not in page
    assert connection_of(browser.svc, second) is None  # nothing stored
    assert len(enqueued.calls) == calls_before  # nothing enqueued
    after = connection_of(browser.svc, first)
    assert after is not None and after.status == "active"
    assert after.token_generation == before.token_generation
    assert set(our_links(sandbox)) == {"evt_1", "evt_2"}
    # The refused grant was given back; the first account's grant still works.
    assert [g.id for g in live_grants(sandbox)] == [first_grant.id]
    run_sync(browser.svc, after.id, trigger="manual")
    assert set(our_links(sandbox)) == {"evt_1", "evt_2"}


def test_reconnecting_revokes_the_grant_it_replaces(
    browser: Browser, sandbox: Any, source: Any, enqueued: RecordingEnqueue
) -> None:
    account, token = browser.new_connect()
    source.store.put_all(account, [event_type(1, account)])
    connect(browser, token)
    [old] = live_grants(sandbox)
    old_refresh = old.refresh_token
    connect(browser, browser.new_connect(account)[1])  # a fresh link: each works once
    assert sandbox.state.grants[old.id].revoked  # the old grant is dead at Close
    [new] = live_grants(sandbox)
    assert new.id != old.id
    # Refreshing with the old token fails; the stored (new) pair still works.
    from service.close.oauth import OAuthFailure

    with pytest.raises(OAuthFailure):
        browser.svc.oauth.refresh(old_refresh)
    run = run_enqueued(browser.svc, enqueued)
    assert run.status == "succeeded" and set(our_links(sandbox)) == {"evt_1"}
    # The integrator is told: connected the first time, reconnected the second.
    from service.infra.models import Event

    with browser.svc.db.session() as session:
        events = session.scalars(
            select(Event).where(Event.account_id == account).order_by(Event.id)
        ).all()
        told = [
            (e.type, e.data.get("previous_status"))
            for e in events
            if e.type.startswith("connection.")
        ]
    assert told == [("connection.connected", None), ("connection.reconnected", "active")]
    [again] = [e for e in events if e.type == "connection.reconnected"]
    assert again.data["close_user"]["id"] == "user_jane"


def test_the_same_user_reconnecting_in_another_org_leaves_the_old_org_clean(
    browser: Browser, sandbox: Any, source: Any, enqueued: RecordingEnqueue
) -> None:
    account, token = browser.new_connect()
    source.store.put_all(account, [event_type(1, account), event_type(2, account)])
    connect(browser, token)
    run_enqueued(browser.svc, enqueued)
    assert {link["organization_id"] for link in our_links(sandbox).values()} == {"orga_acme"}

    connect(browser, browser.new_connect(account)[1], org="orga_globex")
    links = sandbox.state.links(user_id="user_jane")
    assert [link for link in links if link["organization_id"] == "orga_acme"] == []
    connection = connection_of(browser.svc, account)
    assert connection is not None and connection.close_org_id == "orga_globex"
    run = run_enqueued(browser.svc, enqueued)
    assert run.created == 2
    assert {link["organization_id"] for link in our_links(sandbox).values()} == {"orga_globex"}


def test_the_first_sync_after_a_connect_is_a_reconcile(
    browser: Browser, sandbox: Any, source: Any, enqueued: RecordingEnqueue
) -> None:
    account, token = browser.new_connect()
    source.store.put_all(account, [event_type(1, account), event_type(2, account)])
    connect(browser, token)
    run_enqueued(browser.svc, enqueued)
    sandbox.state.delete_link(our_links(sandbox)["evt_2"]["id"])  # deleted by hand in Close
    connect(browser, browser.new_connect(account)[1])  # same user, same org
    run = run_enqueued(browser.svc, enqueued)
    assert run.trigger == "connect" and run.status == "succeeded"
    assert set(our_links(sandbox)) == {"evt_1", "evt_2"}  # repaired by the reconcile
