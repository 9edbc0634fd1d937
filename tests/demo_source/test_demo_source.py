"""The demo source speaks the integrator's contract, and our source client reads it right."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from service.close.client import make_http_session
from service.demo_source.app import DemoSourceStore, generated_event_types
from service.demo_source.server import DemoSourceServer
from service.source.client import SourceAccountGone, SourceClient, SourceUnavailable

TOKEN = "test-source-token"


def client(source: Any) -> SourceClient:
    return SourceClient(
        base_url=source.url, token=TOKEN, http=make_http_session(), sleep=lambda _s: None
    )


def test_auth_is_required(source: Any) -> None:
    response = requests.get(f"{source.url}/accounts/a/event-types", timeout=5)
    assert response.status_code == 401 and response.json()["error"]


def test_pagination_etag_and_304(source: Any) -> None:
    source.store.put_all("paged", generated_event_types("paged", 250))
    listing = client(source).listing("paged")
    ids = [item["id"] for item in listing]
    assert listing.complete and listing.pages == 3 and len(ids) == len(set(ids)) == 250
    again = client(source).listing("paged", etag=listing.etag)
    assert again.not_modified and list(again) == []
    source.store.update("paged", "evt_paged_1", name="changed")
    changed = client(source).listing("paged", etag=listing.etag)
    assert not changed.not_modified and changed.etag != listing.etag
    # The served listing is cached per change of the store, never past one.
    assert next(item for item in changed if item["id"] == "evt_paged_1")["name"] == "changed"


def test_a_failing_page_makes_the_listing_incomplete(source: Any) -> None:
    source.store.put_all("flaky", generated_event_types("flaky", 250))
    source.faults.fail_pages = [2]
    listing = client(source).listing("flaky")
    assert len(list(listing)) == 100 and not listing.complete and "page 1" in (listing.error or "")


def test_unknown_account_and_outage(source: Any) -> None:
    with pytest.raises(SourceAccountGone):
        client(source).listing("nobody-here")
    source.store.put_all("down", [])
    source.faults.fail_next = 10
    with pytest.raises(SourceUnavailable):
        client(source).listing("down")


def test_file_store_persists_and_picks_up_hand_edits(tmp_path: Path) -> None:
    path = tmp_path / "demo.json"
    store = DemoSourceStore(path)
    created = store.list("acme")
    assert created is not None and len(created) == 5 and sum(not e["active"] for e in created) == 1
    assert DemoSourceStore(path).list("acme") == created
    served = store.listing("acme")
    assert served is not None and served.items == created
    data = json.loads(path.read_text())
    data["accounts"]["acme"][0]["name"] = "Edited by hand"
    time.sleep(0.01)
    path.write_text(json.dumps(data))
    assert store.list("acme")[0]["name"] == "Edited by hand"  # type: ignore[index]
    edited = store.listing("acme")
    assert edited is not None and edited.items[0]["name"] == "Edited by hand"
    assert edited.etag != served.etag


def test_control_endpoints(tmp_path: Path) -> None:
    with DemoSourceServer(DemoSourceStore(None, auto_create=False), token=TOKEN) as server:
        assert requests.put(
            f"{server.url}/_demo/accounts/x/event-types", json=[{"id": "1", "name": "A"}], timeout=5
        ).json() == {"count": 1}
        assert (
            requests.patch(
                f"{server.url}/_demo/accounts/x/event-types/1", json={"name": "B"}, timeout=5
            ).json()["name"]
            == "B"
        )
        assert (
            requests.put(
                f"{server.url}/_demo/accounts/x/event-types", json=[{"no": "id"}], timeout=5
            ).status_code
            == 400
        )
        assert requests.post(
            f"{server.url}/_demo/accounts/y/generate", json={"count": 30}, timeout=5
        ).json() == {"count": 30}
        assert (
            requests.delete(f"{server.url}/_demo/accounts/x/event-types/1", timeout=5).status_code
            == 204
        )
        assert (
            requests.delete(f"{server.url}/_demo/accounts/x/event-types/1", timeout=5).status_code
            == 404
        )
        assert isinstance(requests.get(f"{server.url}/_demo/stats", timeout=5).json(), dict)


def test_members_are_paged_with_etags_and_404_without_a_team(source: Any) -> None:
    source.store.put_all("solo", generated_event_types("solo", 3))
    assert client(source).members("solo") is None  # no team: today's behaviour
    team = [{"id": f"m{n}", "email": f"m{n}@acme.com", "name": f"M {n}"} for n in range(150)]
    source.store.put_all("crew", [])
    source.store.put_members("crew", team)
    listing = client(source).members("crew")
    assert listing is not None
    assert [m["id"] for m in listing] == [m["id"] for m in team]
    assert listing.complete and listing.pages == 2
    again = client(source).members("crew", etag=listing.etag)
    assert again is not None and again.not_modified


def test_the_demo_account_comes_with_a_team(tmp_path: Path) -> None:
    store = DemoSourceStore(tmp_path / "demo.json")
    members = store.members("demo-account")
    event_types = store.list("demo-account")
    assert members is not None and event_types is not None
    emails = {m["email"] for m in members}
    assert {"jane@acme.com", "bob@acme.com", "zoe@example.com"} <= emails
    managed = [e for e in event_types if e.get("managed")]
    personal = [e for e in event_types if e.get("owner_id")]
    assert len(managed) == 2 and all(e["assignments"] for e in managed)
    assert {e["owner_id"] for e in personal} == {m["id"] for m in members}
    # Editable in its file like the event types, and another account has no team.
    assert json.loads((tmp_path / "demo.json").read_text())["members"]["demo-account"] == members
    assert store.members("other-account") is None
