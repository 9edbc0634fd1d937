"""What Close must see from a sync, checked against the strict sandbox over HTTP: payloads
(null for a cleared field), path encoding of odd source ids, and ids Close cannot hold."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from service.infra.models import LinkState
from service.services import Services
from tests.helpers import event_type, link_rows, our_links, sync, writes

ConnectedAccount = Callable[..., tuple[str, int]]


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
    assert link_rows(services, cid) == {}


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
    row = link_rows(services, cid)["team/intro"]
    assert row.state == LinkState.ERROR
    assert "source_id must not contain '/'" in (row.last_error or "")


def test_reconcile_never_deletes_links_of_another_live_connection_of_the_same_user(
    services: Services, sandbox: Any, source: Any
) -> None:
    from tests.conftest import new_account
    from tests.helpers import connect_directly

    first, second = new_account(), new_account()
    source.store.put_all(first, [event_type(1, first, id="a_1"), event_type(2, first, id="a_2")])
    source.store.put_all(second, [event_type(1, second, id="b_1")])
    # Two live connections of one Close user (as left by data from before connect refused it).
    cid_a = connect_directly(services, sandbox, first)
    cid_b = connect_directly(services, sandbox, second)
    assert sync(services, cid_a).created == 2
    run = sync(services, cid_b, reconcile=True)
    assert (run.status, run.created, run.deleted) == ("succeeded", 1, 0)
    assert set(our_links(sandbox)) == {"a_1", "a_2", "b_1"}


def test_a_close_400_keeps_every_message_on_the_link() -> None:
    from service.close.client import CloseValidationError
    from service.sync.engine import rejection_text

    exc = CloseValidationError(
        "x",
        status=400,
        detail={
            "error": "Validation error",
            "errors": ["name clashes", "too many links"],
            "field-errors": {"url": "Enter a valid URL.", "name": "Too long."},
        },
    )
    assert rejection_text(exc) == (
        "Validation error; name clashes; too many links; name: Too long.; url: Enter a valid URL."
    )
