"""The sync engine against the real sandbox and source servers, on SQLite and on
PostgreSQL + Redis. Calls are counted by the sandbox itself."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from service.infra.models import Connection, ConnectionStatus, LinkState
from service.services import Services
from service.settings import SANDBOX_CLIENT_ID
from tests.conftest import new_account
from tests.helpers import (
    close_api_calls,
    connect_directly,
    event_type,
    expected_fields,
    link_rows,
    our_links,
    sync,
    writes,
)

ConnectedAccount = Callable[..., tuple[str, int]]


def test_round_trip_pushes_exactly_what_changed(
    services: Services, sandbox: Any, source: Any
) -> None:
    account = new_account()
    items = [event_type(n, account) for n in range(1, 7)]
    items[5]["active"] = False
    source.store.put_all(account, items)
    cid = connect_directly(services, sandbox, account)

    run = sync(services, cid)
    assert (run.status, run.created, run.updated, run.deleted, run.failed) == (
        "succeeded",
        5,
        0,
        0,
        0,
    )
    links = our_links(sandbox)
    assert set(links) == {"evt_1", "evt_2", "evt_3", "evt_4", "evt_5"}
    for item in items[:5]:
        link = links[item["id"]]
        assert {k: link[k] for k in expected_fields(item)} == expected_fields(item)
        assert link["type"] == "USER" and link["user_id"] == "user_jane"

    # Change one: exactly one upsert.
    sandbox.state.reset_calls()
    source.store.update(account, "evt_2", name="Renamed meeting")
    run = sync(services, cid)
    assert (run.created, run.updated, run.deleted, run.unchanged) == (0, 1, 0, 4)
    assert writes(sandbox) == 1
    assert our_links(sandbox)["evt_2"]["name"] == "Renamed meeting"

    # Delete one and deactivate one: exactly two deletes.
    sandbox.state.reset_calls()
    source.store.delete(account, "evt_3")
    source.store.update(account, "evt_4", active=False)
    run = sync(services, cid)
    assert (run.created, run.updated, run.deleted, run.unchanged) == (0, 0, 2, 3)
    assert sandbox.state.calls["DELETE /scheduling_link/integration/{source_id}/"] == 2
    assert writes(sandbox) == 2
    assert set(our_links(sandbox)) == {"evt_1", "evt_2", "evt_5"}

    # Nothing changed: the source answers 304 to our ETag, and Close hears nothing at all.
    sandbox.state.reset_calls()
    run = sync(services, cid)
    assert run.status == "succeeded" and run.unchanged == 3
    assert close_api_calls(sandbox) == 0


def test_no_change_without_etag_makes_zero_writes(
    services: Services, sandbox: Any, source: Any, connected_account: ConnectedAccount
) -> None:
    _account, cid = connected_account(3)
    sync(services, cid)
    with services.db.session() as session:
        connection = session.get(Connection, cid)
        assert connection is not None
        connection.source_etag = None  # as if the source sent no ETag
    sandbox.state.reset_calls()
    run = sync(services, cid)
    assert run.unchanged == 3 and writes(sandbox) == 0


def test_bad_event_types_are_per_link_errors_and_the_rest_syncs(
    services: Services, sandbox: Any, source: Any
) -> None:
    account = new_account()
    source.store.put_all(
        account,
        [
            event_type(1, account),
            event_type(2, account, url="/relative"),
            event_type(3, account, name=""),
            event_type(4, account, url="ftp://x.example/y"),
        ],
    )
    cid = connect_directly(services, sandbox, account)
    run = sync(services, cid)
    assert run.status == "partial" and run.created == 1 and run.failed == 3
    assert set(our_links(sandbox)) == {"evt_1"}
    rows = link_rows(services, cid)
    assert rows["evt_2"].state == LinkState.ERROR and "absolute http(s)" in (
        rows["evt_2"].last_error or ""
    )
    assert rows["evt_3"].state == LinkState.ERROR and "name is missing" in (
        rows["evt_3"].last_error or ""
    )


def test_incomplete_listing_applies_upserts_but_never_deletes(
    services: Services, sandbox: Any, source: Any, connected_account: ConnectedAccount
) -> None:
    services.settings.CLOSE_RATE_PER_SECOND = 1000.0  # before the budget is made: a fast test
    account, cid = connected_account(250)
    sandbox.state.config.rate_limit_per_token = 1000.0
    assert sync(services, cid).created == 250
    # Page 2 of 3 now fails: whatever is missing from the listing must not be deleted.
    source.faults.fail_pages = [2]
    source.store.update(account, "evt_1", name="Changed while the source is flaky")
    run = sync(services, cid)
    assert run.status == "partial" and run.deleted == 0 and run.updated == 1
    assert "withheld" in (run.error or "")
    assert len(our_links(sandbox)) == 250


def test_faults_throttling_and_token_expiry_still_converge_exactly(
    services: Services, sandbox: Any, source: Any
) -> None:
    account = new_account()
    items = [event_type(n, account) for n in range(1, 61)]
    source.store.put_all(account, items)
    cid = connect_directly(services, sandbox, account)
    sandbox.state.config.rate_limit_per_token = 15.0
    sandbox.state.config.access_token_ttl = 1.0
    sandbox.state.expire_access_tokens()
    sandbox.state.set_faults(
        error_rate=0.25, timeout_rate=0.05, timeout_seconds=1.5, timeout_applies_write=True
    )
    services.settings.CLOSE_TIMEOUT_SECONDS = 1.0
    runs = 0
    while runs < 6:
        runs += 1
        if sync(services, cid).status == "succeeded":
            break
        sandbox.state.set_faults()  # the outage ends after the first run
    assert {sid: link["name"] for sid, link in our_links(sandbox).items()} == {
        i["id"]: i["name"] for i in items
    }
    assert len(sandbox.state.links(user_id="user_jane")) == 60  # no duplicates
    assert sandbox.state.calls["oauth:refresh_token"] >= 1
    assert sandbox.state.calls["oauth:invalid_grant"] == 0
    assert all(row.state == LinkState.SYNCED for row in link_rows(services, cid).values())


@pytest.mark.parametrize("mode", ["full", "none", "retry_after_only", "body_only", "bare"])
def test_rate_limited_sync_paces_itself_whatever_headers_close_sends(
    services: Services,
    sandbox: Any,
    source: Any,
    connected_account: ConnectedAccount,
    mode: str,
) -> None:
    """A limit below our default rate: paced from RateLimit when Close sends it, found after a
    429 or two when it does not; never a tight retry loop, and the result is exact."""
    _account, cid = connected_account(24)
    sandbox.state.update_config(rate_limit_per_token=5.0, rate_limit_headers=mode)
    started = time.monotonic()
    run = sync(services, cid)
    elapsed = time.monotonic() - started
    assert (run.status, run.created) == ("succeeded", 24), run.error
    assert set(our_links(sandbox)) == {f"evt_{n}" for n in range(1, 25)}
    limited = sandbox.state.calls["429"]
    print(f"mode={mode} 429s={limited} elapsed={elapsed:.1f}s")
    assert limited <= (1 if mode == "full" else 6), limited
    assert elapsed < 20  # about 5 s at the limit; backing off must not crawl either


def test_reconcile_repairs_drift_and_never_touches_other_links(
    services: Services, sandbox: Any, source: Any, connected_account: ConnectedAccount
) -> None:
    _account, cid = connected_account(3)
    sync(services, cid)
    manual = sandbox.state.add_manual_link(
        "user_jane", "orga_acme", "My own link", "https://cal.example/me"
    )
    # A human deletes one of ours in Close's UI; an orphan of ours appears (e.g. a lost delete).
    sandbox.state.delete_link(our_links(sandbox)["evt_2"]["id"])
    token = sandbox.state.issue_tokens(SANDBOX_CLIENT_ID, "user_jane", "orga_acme")["access_token"]
    response = requests.post(
        f"{sandbox.url}/api/v1/scheduling_link/integration/",
        json={"source_id": "evt_orphan", "name": "Orphan", "url": "https://x.example/o"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )
    assert response.status_code == 200
    run = sync(services, cid, reconcile=True)
    assert run.status == "succeeded"
    assert set(our_links(sandbox)) == {"evt_1", "evt_2", "evt_3"}
    ids = {link["id"] for link in sandbox.state.links(user_id="user_jane")}
    assert manual["id"] in ids


def test_a_close_that_lost_every_link_is_repaired_by_the_next_reconcile(
    services: Services, sandbox: Any, source: Any, connected_account: ConnectedAccount
) -> None:
    """What a restarted dev sandbox without its state file looks like to us: the grant still
    works, but Close holds none of our links while our rows say synced. The next reconcile
    puts every link back and the connection stays active (no "needs reconnect")."""
    _account, cid = connected_account(5)
    assert sync(services, cid).created == 5
    for link in our_links(sandbox).values():
        sandbox.state.delete_link(link["id"])
    assert our_links(sandbox) == {}
    run = sync(services, cid, reconcile=True)
    assert run.status == "succeeded" and run.created == 5, run.error
    assert set(our_links(sandbox)) == {f"evt_{n}" for n in range(1, 6)}
    with services.db.session() as session:
        connection = session.get(Connection, cid)
        assert connection is not None and connection.status == ConnectionStatus.ACTIVE
    assert all(row.state == LinkState.SYNCED for row in link_rows(services, cid).values())


def test_source_account_gone_pauses_without_deleting(
    services: Services, sandbox: Any, source: Any
) -> None:
    account = new_account()
    source.store.put_all(account, [event_type(1, account)])
    cid = connect_directly(services, sandbox, account)
    sync(services, cid)
    source.store.delete_account(account)
    run = sync(services, cid)
    assert run.status == "failed" and "404" in (run.error or "")
    with services.db.session() as session:
        connection = session.get(Connection, cid)
        assert connection is not None and connection.status == ConnectionStatus.PAUSED
    assert set(our_links(sandbox)) == {"evt_1"}
