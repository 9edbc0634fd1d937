"""The dev sandbox's optional memory: with a state_path the world survives a restart."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from service.sandbox import persistence
from service.sandbox.server import SandboxServer
from service.sandbox.state import SandboxState
from tests.sandbox.harness import CLIENT_ID, CLIENT_SECRET

LINK = {"source_id": "evt-1", "name": "Intro", "url": "https://b.example/intro"}


@pytest.fixture
def state_file(tmp_path: Path) -> Path:
    return tmp_path / "dev" / "close-sandbox.json"


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def api(
    http: requests.Session, server: SandboxServer, method: str, path: str, access: str, **kw: Any
) -> requests.Response:
    return http.request(
        method,
        f"{server.url}/api/v1{path}",
        headers={"Authorization": f"Bearer {access}"},
        timeout=5,
        **kw,
    )


def refresh(http: requests.Session, server: SandboxServer, token: str) -> requests.Response:
    return http.post(
        f"{server.url}/oauth2/token/",
        data={
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "grant_type": "refresh_token",
            "refresh_token": token,
        },
        timeout=5,
    )


def world(state: SandboxState) -> dict[str, Any]:
    snapshot = state.snapshot()
    return {k: snapshot[k] for k in ("orgs", "users", "memberships", "links", "shared_links")} | {
        "associations": snapshot["associations"],
        "grants": snapshot["grants"],
        "access_tokens": snapshot["access_tokens"],
    }


def test_a_restarted_sandbox_remembers_close(state_file: Path, http: requests.Session) -> None:
    with SandboxServer(state_path=state_file) as server:
        state = server.state
        state.add_user("user_frank", "Frank", "Lead", "frank@acme.com", ["orga_acme"])
        state.set_permissions("user_bob", "orga_acme", ["manage_customizations"])
        jane, bob, carol = (
            state.issue_tokens(CLIENT_ID, user, "orga_acme")
            for user in ("user_jane", "user_bob", "user_carol")
        )
        expired = state.issue_tokens(CLIENT_ID, "user_dave", "orga_acme")
        link = api(
            http, server, "POST", "/scheduling_link/integration/", bob["access_token"], json=LINK
        )
        assert link.status_code == 200
        assert state_file.exists()  # saved after the mutating request
        shared = api(
            http,
            server,
            "POST",
            "/shared_scheduling_link/",
            jane["access_token"],
            json={"name": "Demo"},
        ).json()
        mapping = {
            "organization_id": "orga_acme",
            "shared_scheduling_link_id": shared["id"],
            "user_id": "user_bob",
            "user_scheduling_link_id": link.json()["id"],
        }
        assert (
            api(
                http,
                server,
                "POST",
                "/shared_scheduling_link_association/",
                bob["access_token"],
                json=mapping,
            ).status_code
            == 200
        )
        rotated = refresh(http, server, jane["refresh_token"]).json()
        revoked = http.post(
            f"{server.url}/oauth2/revoke/",
            data={
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "token": carol["refresh_token"],
            },
            timeout=5,
        )
        assert revoked.status_code == 200
        state.expire_access_tokens()
        state.save()  # Python-API changes are saved when asked (the app saves after requests)
        renewed = refresh(http, server, rotated["refresh_token"]).json()  # a request: saved
        before = world(state)
        saved = json.loads(state_file.read_text())
        assert saved["version"] == persistence.FORMAT_VERSION

    with SandboxServer(state_path=state_file) as restarted:
        again = restarted.state
        assert world(again) == before
        assert again.links(user_id="user_bob")[0]["id"] == link.json()["id"]
        assert again.associations() == [mapping]
        # Tokens: the live one works, the rotated-away and revoked ones stay dead, the expired
        # one stays expired but its refresh token still works.
        assert api(http, restarted, "GET", "/me/", renewed["access_token"]).status_code == 200
        assert refresh(http, restarted, rotated["refresh_token"]).json()["error"] == "invalid_grant"
        assert api(http, restarted, "GET", "/me/", carol["access_token"]).status_code == 401
        assert refresh(http, restarted, carol["refresh_token"]).json()["error"] == "invalid_grant"
        stale = api(http, restarted, "GET", "/me/", expired["access_token"])
        assert stale.status_code == 401 and "expired" in stale.json()["error"]
        assert refresh(http, restarted, expired["refresh_token"]).status_code == 200
        # The same source_id still updates the same link, from before the restart.
        bob_again = refresh(http, restarted, bob["refresh_token"]).json()
        upsert = api(
            http,
            restarted,
            "POST",
            "/scheduling_link/integration/",
            bob_again["access_token"],
            json={**LINK, "name": "Intro v2"},
        )
        assert upsert.json()["id"] == link.json()["id"]
        assert len(again.links()) == 1
        me = api(http, restarted, "GET", "/me/", bob_again["access_token"]).json()
        assert me["memberships"][0]["permissions_granted"] == ["manage_customizations"]
        assert "user_frank" in {u["id"] for u in again.snapshot()["users"]}


def test_only_mutating_requests_save_and_writes_are_atomic(
    state_file: Path, http: requests.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    with SandboxServer(state_path=state_file) as server:
        access = server.state.issue_tokens(CLIENT_ID, "user_jane", "orga_acme")["access_token"]
        assert api(http, server, "GET", "/me/", access).status_code == 200
        assert http.get(f"{server.url}/_sandbox/state", timeout=5).status_code == 200
        assert not state_file.exists()
        api(http, server, "POST", "/scheduling_link/integration/", access, json=LINK)
        good = state_file.read_text()

        def crash(*_: Any, **__: Any) -> None:
            raise OSError("disk full")

        monkeypatch.setattr(persistence.json, "dump", crash)
        # A failed save is logged; the answer and the world in memory are unaffected.
        answer = api(
            http,
            server,
            "POST",
            "/scheduling_link/integration/",
            access,
            json={**LINK, "source_id": "evt-2"},
        )
        assert answer.status_code == 200 and len(server.state.links()) == 2
        assert state_file.read_text() == good  # the old file is whole
        assert list(state_file.parent.iterdir()) == [state_file]  # no temporary file left
        monkeypatch.undo()
        assert http.post(f"{server.url}/_sandbox/reset", timeout=5).status_code == 200
        assert json.loads(state_file.read_text())["links"]["links"] == []


def test_persistence_is_off_by_default_and_a_broken_file_is_refused(state_file: Path) -> None:
    in_memory = SandboxState()
    assert not in_memory.persists and in_memory.state_path is None
    in_memory.save()  # nothing to do
    fresh = SandboxState(state_path=state_file)
    assert fresh.persists and not state_file.exists()
    assert {u["id"] for u in fresh.snapshot()["users"]} >= {"user_jane", "user_bob"}
    state_file.parent.mkdir(parents=True, exist_ok=True)
    for broken in ("{not json", "[]", '{"version": 99}', '{"version": 1, "grants": []}'):
        state_file.write_text(broken)
        with pytest.raises(ValueError, match="sandbox state"):
            SandboxState(state_path=state_file)
    with pytest.raises(ValueError, match="not both"):
        SandboxServer(SandboxState(), state_path=state_file)
