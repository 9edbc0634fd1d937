"""The integrator API through HTTP on SQLite and PostgreSQL + Redis."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import event

from service.app import create_app
from service.container import Services
from service.db import utcnow
from service.models import Connection, ConnectionStatus, LinkState, SyncedLink, SyncRun
from tests.conftest import API_KEY, RecordingEnqueue, new_account

AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture
def client(services: Services) -> Iterator[FlaskClient]:
    yield create_app(services.settings, services=services).test_client()


def add_connection(
    svc: Services, links: int = 0, status: str = ConnectionStatus.ACTIVE
) -> tuple[str, int]:
    account = new_account()
    with svc.db.session() as session:
        connection = Connection(
            account_id=account,
            status=status,
            close_user_id="user_jane",
            close_user_name="Jane Doe",
            close_user_email="jane@acme.com",
            close_org_id="orga_acme",
            close_org_name="Acme Inc.",
            access_token_enc="ciphertext-never-shown",
            refresh_token_enc="ciphertext-never-shown",
            connected_at=utcnow(),
        )
        session.add(connection)
        session.flush()
        for n in range(links):
            session.add(
                SyncedLink(
                    connection_id=connection.id,
                    source_id=f"evt_{n}",
                    name=f"Link {n}",
                    url=f"https://b.example/{n}",
                    state=LinkState.ERROR if n == 0 else LinkState.SYNCED,
                    last_error="url is missing" if n == 0 else None,
                )
            )
        return account, connection.id


@contextmanager
def statements(svc: Services) -> Iterator[list[str]]:
    seen: list[str] = []

    def listen(_c, _cur, statement, *_a) -> None:  # type: ignore[no-untyped-def]
        seen.append(statement)

    event.listen(svc.db.engine, "before_cursor_execute", listen)
    try:
        yield seen
    finally:
        event.remove(svc.db.engine, "before_cursor_execute", listen)


def test_connect_session_is_created_with_a_signed_url(
    client: FlaskClient, services: Services
) -> None:
    response = client.post("/api/v1/connect-sessions", json={"account_id": "acct-1"}, headers=AUTH)
    assert response.status_code == 201
    body = response.json
    assert body["connect_url"] == f"{services.settings.PUBLIC_URL}/connect/{body['token']}"
    assert body["expires_at"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "account_id"),
        ({"account_id": ""}, "account_id"),
        ({"account_id": 5}, "account_id"),
        ({"account_id": "x" * 300}, "account_id"),
        ({"account_id": "a", "extra": 1}, "extra"),
        ({"account_id": "a", "return_url": "https://evil.example/"}, "return_url"),
        ({"account_id": "../etc"}, "account_id"),
    ],
)
def test_bad_connect_session_bodies_name_the_field(
    client: FlaskClient, payload: dict[str, Any], field: str
) -> None:
    response = client.post("/api/v1/connect-sessions", json=payload, headers=AUTH)
    assert response.status_code == 400
    assert response.json["error"]["field"] == field


def test_return_url_only_from_allowed_origins(make_settings: Any, services: Services) -> None:
    import service.migrate as migrate

    settings = make_settings(RETURN_URL_ALLOWED_ORIGINS="https://app.example.com")
    migrate.upgrade(settings.database_url)
    client = create_app(
        settings, services=Services(settings, enqueue=RecordingEnqueue())
    ).test_client()
    ok = client.post(
        "/api/v1/connect-sessions",
        json={"account_id": "a", "return_url": "https://app.example.com/settings"},
        headers=AUTH,
    )
    assert ok.status_code == 201
    bad = client.post(
        "/api/v1/connect-sessions",
        json={"account_id": "a", "return_url": "https://app.example.com.evil.example/"},
        headers=AUTH,
    )
    assert bad.status_code == 400


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic abc", "Bearer "])
def test_every_route_needs_the_api_key(client: FlaskClient, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    for method, path in [
        ("post", "/api/v1/connect-sessions"),
        ("get", "/api/v1/accounts/a/connection"),
        ("get", "/api/v1/accounts/a/links"),
        ("post", "/api/v1/accounts/a/sync"),
        ("get", "/api/v1/sync-runs/1"),
        ("delete", "/api/v1/accounts/a/connection"),
    ]:
        response = getattr(client, method)(path, headers=headers, json={})
        assert response.status_code == 401, path
        assert response.json["error"]["code"] == "unauthorized"


def test_wrong_content_type_is_415(client: FlaskClient) -> None:
    response = client.post(
        "/api/v1/connect-sessions", data="account_id=a", headers=AUTH, content_type="text/plain"
    )
    assert response.status_code == 415


def test_connection_status_never_shows_tokens(client: FlaskClient, services: Services) -> None:
    account, _ = add_connection(services, links=3)
    response = client.get(f"/api/v1/accounts/{account}/connection", headers=AUTH)
    assert response.status_code == 200
    body = response.json
    assert body["status"] == "active"
    assert body["close_user"] == {"id": "user_jane", "name": "Jane Doe", "email": "jane@acme.com"}
    assert body["close_organization"] == {"id": "orga_acme", "name": "Acme Inc."}
    assert body["links"] == {"total": 3, "synced": 2, "pending": 0, "error": 1, "deleting": 0}
    assert "ciphertext" not in response.get_data(as_text=True)


def test_unknown_account_and_run_are_404_json(client: FlaskClient) -> None:
    for path in [
        "/api/v1/accounts/nobody/connection",
        "/api/v1/accounts/nobody/links",
        "/api/v1/sync-runs/999999",
        "/api/v1/sync-runs/abc",
    ]:
        response = client.get(path, headers=AUTH)
        assert response.status_code == 404 and response.is_json, path


def test_links_are_paginated_with_constant_queries(client: FlaskClient, services: Services) -> None:
    small, _ = add_connection(services, links=5)
    large, _ = add_connection(services, links=50)
    with statements(services) as few:
        assert len(client.get(f"/api/v1/accounts/{small}/links", headers=AUTH).json["data"]) == 5
    with statements(services) as many:
        page = client.get(f"/api/v1/accounts/{large}/links?limit=20", headers=AUTH).json
    assert len(few) == len(many)
    seen = [link["source_id"] for link in page["data"]]
    while page["next_cursor"]:
        page = client.get(
            f"/api/v1/accounts/{large}/links?limit=20&cursor={page['next_cursor']}", headers=AUTH
        ).json
        seen += [link["source_id"] for link in page["data"]]
    assert sorted(seen) == sorted(f"evt_{n}" for n in range(50))
    assert client.get(f"/api/v1/accounts/{large}/links?limit=0", headers=AUTH).status_code == 400
    assert client.get(f"/api/v1/accounts/{large}/links?limit=abc", headers=AUTH).status_code == 400


def test_status_counts_use_constant_queries(client: FlaskClient, services: Services) -> None:
    small, _ = add_connection(services, links=5)
    large, _ = add_connection(services, links=60)
    with statements(services) as few:
        client.get(f"/api/v1/accounts/{small}/connection", headers=AUTH)
    with statements(services) as many:
        client.get(f"/api/v1/accounts/{large}/connection", headers=AUTH)
    assert len(few) == len(many) <= 3


def test_sync_trigger_records_a_run_and_enqueues_after_commit(
    client: FlaskClient, services: Services, enqueued: RecordingEnqueue
) -> None:
    account, cid = add_connection(services)
    response = client.post(f"/api/v1/accounts/{account}/sync", headers=AUTH)
    assert response.status_code == 202 and response.json["status"] == "queued"
    run_id = response.json["run_id"]
    assert enqueued.calls == [(cid, "manual", run_id)]
    run = client.get(f"/api/v1/sync-runs/{run_id}", headers=AUTH).json
    assert run["account_id"] == account and run["trigger"] == "manual" and run["status"] == "queued"
    assert run["counts"] == {"created": 0, "updated": 0, "deleted": 0, "unchanged": 0, "failed": 0}
    with services.db.session() as session:
        assert session.get(SyncRun, run_id) is not None


def test_sync_of_an_inactive_connection_is_a_conflict(
    client: FlaskClient, services: Services, enqueued: RecordingEnqueue
) -> None:
    account, _ = add_connection(services, status=ConnectionStatus.NEEDS_REAUTH)
    response = client.post(f"/api/v1/accounts/{account}/sync", headers=AUTH)
    assert response.status_code == 409 and "needs_reauth" in response.json["error"]["message"]
    assert enqueued.calls == []


def test_keep_links_must_be_a_boolean(client: FlaskClient, services: Services) -> None:
    account, _ = add_connection(services)
    response = client.delete(
        f"/api/v1/accounts/{account}/connection?keep_links=maybe", headers=AUTH
    )
    assert response.status_code == 400 and response.json["error"]["field"] == "keep_links"


def test_openapi_documents_every_route(client: FlaskClient) -> None:
    doc = client.get("/api/v1/openapi.json").json
    assert doc["openapi"].startswith("3.1")
    expected = {
        ("/api/v1/connect-sessions", "post"),
        ("/api/v1/accounts/{account_id}/connection", "get"),
        ("/api/v1/accounts/{account_id}/connection", "delete"),
        ("/api/v1/accounts/{account_id}/links", "get"),
        ("/api/v1/accounts/{account_id}/sync", "post"),
        ("/api/v1/sync-runs/{run_id}", "get"),
        ("/webhooks/source", "post"),
    }
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert expected <= documented
    assert "ConnectionOut" in doc["components"]["schemas"]


@pytest.mark.parametrize("keep_links", [False, True])
def test_disconnect_removes_our_links_revokes_and_keeps_a_record(
    client: FlaskClient, services: Services, sandbox: Any, source: Any, keep_links: bool
) -> None:
    from service.sync.runner import run_sync
    from tests.helpers import connect_directly, event_type, our_links

    account = new_account()
    source.store.put_all(account, [event_type(n, account) for n in range(1, 4)])
    cid = connect_directly(services, sandbox, account)
    run_sync(services, cid, trigger="manual")
    manual = sandbox.state.add_manual_link(
        "user_jane", "orga_acme", "Mine", "https://cal.example/me"
    )
    assert len(our_links(sandbox)) == 3
    response = client.delete(
        f"/api/v1/accounts/{account}/connection?keep_links={str(keep_links).lower()}", headers=AUTH
    )
    assert response.status_code == 200 and response.json["status"] == "disconnected"
    assert len(our_links(sandbox)) == (3 if keep_links else 0)
    assert manual["id"] in {link["id"] for link in sandbox.state.links(user_id="user_jane")}
    assert sandbox.state.calls["oauth:revoke"] == 1
    with services.db.session() as session:
        connection = session.get(Connection, cid)
        assert connection is not None and connection.refresh_token_enc is None
        assert connection.status == ConnectionStatus.DISCONNECTED
    # Idempotent, and the record stays readable.
    assert client.delete(f"/api/v1/accounts/{account}/connection", headers=AUTH).status_code == 200
    assert (
        client.get(f"/api/v1/accounts/{account}/connection", headers=AUTH).json["status"]
        == "disconnected"
    )


def test_disconnect_when_close_is_down_changes_nothing(
    client: FlaskClient, services: Services, sandbox: Any, source: Any
) -> None:
    from service.sync.runner import run_sync
    from tests.helpers import connect_directly, event_type, our_links

    account = new_account()
    source.store.put_all(account, [event_type(1, account)])
    cid = connect_directly(services, sandbox, account)
    run_sync(services, cid, trigger="manual")
    sandbox.state.set_faults(error_rate=1.0, error_status=503)
    services.settings.CLOSE_TIMEOUT_SECONDS = 1
    response = client.delete(f"/api/v1/accounts/{account}/connection", headers=AUTH)
    assert response.status_code == 503 and "keep_links" in response.json["error"]["message"]
    sandbox.state.set_faults()
    with services.db.session() as session:
        connection = session.get(Connection, cid)
        assert connection is not None and connection.status == ConnectionStatus.ACTIVE
    assert len(our_links(sandbox)) == 1
