"""What Close must see from a sync, checked against the strict sandbox over HTTP: payloads
(null for a cleared field), path encoding of odd source ids, and ids Close cannot hold."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from service.infra.models import LinkState, SyncedLink, SyncRun
from service.services import Services
from service.sync.runner import run_sync
from tests.helpers import event_type, our_links, writes

ConnectedAccount = Callable[..., tuple[str, int]]


def sync(svc: Services, connection_id: int, **kwargs: Any) -> SyncRun:
    run_ids = run_sync(svc, connection_id, trigger="manual", **kwargs)
    with svc.db.session() as session:
        run = session.get(SyncRun, run_ids[-1])
        assert run is not None
        return run


def rows_of(svc: Services, connection_id: int) -> dict[str, SyncedLink]:
    with svc.db.session() as session:
        rows = session.scalars(select(SyncedLink).where(SyncedLink.connection_id == connection_id))
        return {row.source_id: row for row in rows}


@pytest.mark.parametrize(
    ("source_field", "close_field"),
    [
        ("description", "description"),
        ("kind", "source_type"),
        ("duration_minutes", "duration_in_minutes"),
    ],
)
def test_clearing_a_field_in_the_source_clears_it_in_close(
    services: Services,
    sandbox: Any,
    source: Any,
    connected_account: ConnectedAccount,
    source_field: str,
    close_field: str,
) -> None:
    account, cid = connected_account(2)
    assert sync(services, cid).created == 2
    assert our_links(sandbox)["evt_1"][close_field] is not None
    source.store.update(account, "evt_1", **{source_field: None})
    sandbox.state.reset_calls()
    run = sync(services, cid)
    assert (run.status, run.updated, run.unchanged) == ("succeeded", 1, 1)
    assert writes(sandbox) == 1
    assert our_links(sandbox)["evt_1"][close_field] is None
    assert our_links(sandbox)["evt_2"][close_field] is not None


ODD_IDS = [
    "with space",
    "what?x=1",
    "hash#frag",
    "100%",
    "%2F",
    "ünïcødé-日本",
    ".",
    "..",
    "a.b",
    "a..b",
    "+plus&amp;",
]


def test_odd_source_ids_round_trip_upsert_then_delete(
    services: Services, sandbox: Any, source: Any, connected_account: ConnectedAccount
) -> None:
    items = [event_type(n, "odd", id=sid) for n, sid in enumerate(ODD_IDS, 1)]
    account, cid = connected_account(items=items)
    run = sync(services, cid)
    assert (run.status, run.created) == ("succeeded", len(ODD_IDS))
    assert set(our_links(sandbox)) == set(ODD_IDS)
    source.store.put_all(account, [])
    sandbox.state.reset_calls()
    run = sync(services, cid)
    assert (run.status, run.deleted, run.failed) == ("succeeded", len(ODD_IDS), 0), run.error
    assert our_links(sandbox) == {}
    assert rows_of(services, cid) == {}


def test_an_id_with_a_slash_is_a_local_per_link_error_and_never_sent(
    services: Services, sandbox: Any, source: Any, connected_account: ConnectedAccount
) -> None:
    items = [event_type(1, "slash"), event_type(2, "slash", id="team/intro")]
    _account, cid = connected_account(items=items)
    sandbox.state.reset_calls()
    run = sync(services, cid)
    assert (run.status, run.created, run.failed) == ("partial", 1, 1)
    assert writes(sandbox) == 1  # the bad one never reached Close
    assert set(our_links(sandbox)) == {"evt_1"}
    row = rows_of(services, cid)["team/intro"]
    assert row.state == LinkState.ERROR
    assert "source_id must not contain '/'" in (row.last_error or "")
