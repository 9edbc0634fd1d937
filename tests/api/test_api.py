"""The integrator API through HTTP on SQLite and PostgreSQL + Redis: every route's success and
error answers, authentication, validation naming the field, account isolation, constant query
counts, and the OpenAPI document generated from the routes."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, insert

from service.api import webhooks
from service.app import create_app
from service.infra.db import utcnow
from service.infra.models import Connection, ConnectionStatus, LinkState, SyncedLink, SyncRun
from service.services import Services
from tests.conftest import API_KEY, RecordingEnqueue, new_account

AUTH = {"Authorization": f"Bearer {API_KEY}"}
INACTIVE = [ConnectionStatus.NEEDS_REAUTH, ConnectionStatus.PAUSED, ConnectionStatus.DISCONNECTED]


@pytest.fixture
def app(services: Services) -> Flask:
    return create_app(services.settings, services=services)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def add_connection(
    svc: Services, links: int = 0, status: str = ConnectionStatus.ACTIVE, prefix: str = "evt"
) -> tuple[str, int]:
    """A connection as the OAuth callback leaves it (with stand-in ciphertext), and its links:
    the first one in error, the others synced."""
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
        if links:
            session.execute(
                insert(SyncedLink),
                [
                    {
                        "connection_id": connection.id,
                        "source_id": f"{prefix}_{n}",
                        "name": f"Link {n}",
                        "url": f"https://b.example/{prefix}/{n}",
                        "state": LinkState.ERROR if n == 0 else LinkState.SYNCED,
                        "last_error": "url is missing" if n == 0 else None,
                        "close_link_id": None if n == 0 else f"schedlink_{prefix}_{n}",
                    }
                    for n in range(links)
                ],
            )
        return account, connection.id


def add_run(svc: Services, connection_id: int, **values: Any) -> int:
    with svc.db.session() as session:
        run = SyncRun(connection_id=connection_id, trigger="schedule", **values)
        session.add(run)
        session.flush()
        return run.id


@contextmanager
def statements(svc: Services) -> Iterator[list[str]]:
    """The SQL statements sent while the block runs."""
    seen: list[str] = []

    def listen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(svc.db.engine, "before_cursor_execute", listen)
    try:
        yield seen
    finally:
        event.remove(svc.db.engine, "before_cursor_execute", listen)


def all_pages(client: FlaskClient, account: str, limit: int) -> list[dict[str, Any]]:
    links: list[dict[str, Any]] = []
    url = f"/api/v1/accounts/{account}/links?limit={limit}"
    while True:
        page = client.get(url, headers=AUTH).json
        links += page["data"]
        if page["next_cursor"] is None:
            return links
        url = f"/api/v1/accounts/{account}/links?limit={limit}&cursor={page['next_cursor']}"


# Authentication -------------------------------------------------------------------------

ROUTES = [
    ("post", "/api/v1/connect-sessions"),
    ("get", "/api/v1/accounts/a/connection"),
    ("get", "/api/v1/accounts/a/links"),
    ("post", "/api/v1/accounts/a/sync"),
    ("get", "/api/v1/sync-runs/1"),
    ("delete", "/api/v1/accounts/a/connection"),
]


@pytest.mark.parametrize(
    "header", [None, "Bearer wrong", "Basic abc", "Bearer ", API_KEY, f"Bearer {API_KEY}x"]
)
def test_every_route_needs_the_api_key(client: FlaskClient, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    for method, path in ROUTES:
        response = getattr(client, method)(path, headers=headers, json={"account_id": "a"})
        assert response.status_code == 401, path
        assert response.json["error"]["code"] == "unauthorized"


def test_any_configured_key_is_accepted(make_settings: Any, services: Services) -> None:
    settings = make_settings(
        API_KEYS=f"old-key-{'o' * 20},{API_KEY}", DATABASE_URL=services.settings.DATABASE_URL
    )
    client = create_app(settings, services=Services(settings, enqueue=RecordingEnqueue()))
    for key in (f"old-key-{'o' * 20}", API_KEY):
        response = client.test_client().get(
            "/api/v1/accounts/nobody/connection", headers={"Authorization": f"bearer {key}"}
        )
        assert response.status_code == 404


# Connect sessions -----------------------------------------------------------------------


def test_connect_session_is_created_with_a_signed_url(
    client: FlaskClient, services: Services
) -> None:
    response = client.post("/api/v1/connect-sessions", json={"account_id": "acct-1"}, headers=AUTH)
    assert response.status_code == 201
    body = response.json
    assert set(body) == {"token", "connect_url", "expires_at"}
    assert body["connect_url"] == f"{services.settings.PUBLIC_URL}/connect/{body['token']}"
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", body["expires_at"])
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "account_id"),
        ({"account_id": ""}, "account_id"),
        ({"account_id": 5}, "account_id"),
        ({"account_id": None}, "account_id"),
        ({"account_id": "x" * 256}, "account_id"),
        ({"account_id": "a", "extra": 1}, "extra"),
        ({"account_id": "a", "return_url": 7}, "return_url"),
        ({"account_id": "a", "return_url": "https://evil.example/"}, "return_url"),
        ({"account_id": "a", "return_url": "javascript:alert(1)"}, "return_url"),
        ({"account_id": "../etc"}, "account_id"),
        ({"account_id": ".."}, "account_id"),
        ({"account_id": "a\x00b"}, "account_id"),
        ({"account_id": "   "}, "account_id"),
    ],
)
def test_bad_connect_session_bodies_name_the_field(
    client: FlaskClient, payload: dict[str, Any], field: str
) -> None:
    response = client.post("/api/v1/connect-sessions", json=payload, headers=AUTH)
    assert response.status_code == 400
    assert response.json["error"]["field"] == field
    assert field in response.json["error"]["message"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'"account_id"', "JSON object"),
    ],
)
def test_bodies_that_are_not_a_json_object_are_400(
    client: FlaskClient, data: bytes, message: str
) -> None:
    response = client.post(
        "/api/v1/connect-sessions", data=data, headers=AUTH, content_type="application/json"
    )
    assert response.status_code == 400 and message in response.json["error"]["message"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_wrong_content_type_is_415(client: FlaskClient, content_type: str | None) -> None:
    response = client.post(
        "/api/v1/connect-sessions",
        data='{"account_id": "a"}',
        headers=AUTH,
        content_type=content_type,
    )
    assert response.status_code == 415 and response.is_json


def test_oversized_body_is_413_json(client: FlaskClient) -> None:
    response = client.post(
        "/api/v1/connect-sessions",
        data=b'{"account_id": "' + b"a" * 200_000 + b'"}',
        headers=AUTH,
        content_type="application/json",
    )
    assert response.status_code == 413 and response.is_json


def test_return_url_only_from_allowed_origins(make_settings: Any, services: Services) -> None:
    settings = make_settings(
        RETURN_URL_ALLOWED_ORIGINS="https://app.example.com",
        DATABASE_URL=services.settings.DATABASE_URL,
    )
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
    assert bad.status_code == 400 and bad.json["error"]["field"] == "return_url"


# Path identifiers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "account", ["..", "%2e%2e", ".", "a%00b", "a%0Ab", "%20%20", "a" * 256, "a%5Cb"]
)
@pytest.mark.parametrize(
    ("method", "suffix"),
    [("get", "connection"), ("get", "links"), ("post", "sync"), ("delete", "connection")],
)
def test_hostile_account_ids_in_paths_are_400_json(
    client: FlaskClient, enqueued: RecordingEnqueue, account: str, method: str, suffix: str
) -> None:
    response = getattr(client, method)(f"/api/v1/accounts/{account}/{suffix}", headers=AUTH)
    assert response.status_code == 400 and response.is_json
    assert response.json["error"]["field"] == "account_id"
    assert enqueued.calls == []


def test_an_encoded_slash_never_reaches_another_route(client: FlaskClient) -> None:
    response = client.get("/api/v1/accounts/a%2Fb/connection", headers=AUTH)
    assert response.status_code in (400, 404) and response.is_json


@pytest.mark.parametrize(
    "run_id", ["abc", "0", "-1", "1.5", "2147483648", "9" * 40, "%C2%B2", "1e3"]
)
def test_run_ids_that_are_not_positive_integers_are_404_json(
    client: FlaskClient, run_id: str
) -> None:
    response = client.get(f"/api/v1/sync-runs/{run_id}", headers=AUTH)
    assert response.status_code == 404 and response.is_json


# Connection status ------------------------------------------------------------------------


def test_connection_status_shows_user_org_counts_and_never_tokens(
    client: FlaskClient, services: Services
) -> None:
    account, cid = add_connection(services, links=3)
    run_id = add_run(services, cid, status="succeeded")
    with services.db.session() as session:
        connection = session.get(Connection, cid)
        assert connection is not None
        connection.last_sync_at = utcnow()
        connection.last_sync_status = "succeeded"
        connection.last_sync_run_id = run_id
    response = client.get(f"/api/v1/accounts/{account}/connection", headers=AUTH)
    assert response.status_code == 200
    body = response.json
    assert set(body) == {
        "account_id",
        "status",
        "status_reason",
        "close_user",
        "close_organization",
        "links",
        "last_sync",
        "connected_at",
        "disconnected_at",
        "next_sync_at",
    }
    assert body["account_id"] == account and body["status"] == "active"
    assert body["close_user"] == {"id": "user_jane", "name": "Jane Doe", "email": "jane@acme.com"}
    assert body["close_organization"] == {"id": "orga_acme", "name": "Acme Inc."}
    assert body["links"] == {"total": 3, "synced": 2, "pending": 0, "error": 1, "deleting": 0}
    assert body["last_sync"]["run_id"] == run_id and body["last_sync"]["status"] == "succeeded"
    assert "ciphertext" not in response.get_data(as_text=True)
    assert "token" not in response.get_data(as_text=True)


def test_a_never_synced_connection_has_no_last_sync(
    client: FlaskClient, services: Services
) -> None:
    account, _ = add_connection(services)
    body = client.get(f"/api/v1/accounts/{account}/connection", headers=AUTH).json
    assert body["last_sync"] is None
    assert body["links"] == {"total": 0, "synced": 0, "pending": 0, "error": 0, "deleting": 0}


@pytest.mark.parametrize("status", [*INACTIVE])
def test_status_reports_every_connection_state(
    client: FlaskClient, services: Services, status: str
) -> None:
    account, _ = add_connection(services, status=status)
    response = client.get(f"/api/v1/accounts/{account}/connection", headers=AUTH)
    assert response.status_code == 200 and response.json["status"] == status


def test_unknown_accounts_are_404_json(client: FlaskClient) -> None:
    for method, path in [
        ("get", "/api/v1/accounts/nobody/connection"),
        ("get", "/api/v1/accounts/nobody/links"),
        ("post", "/api/v1/accounts/nobody/sync"),
        ("delete", "/api/v1/accounts/nobody/connection"),
        ("get", "/api/v1/sync-runs/2147483647"),
    ]:
        response = getattr(client, method)(path, headers=AUTH)
        assert response.status_code == 404 and response.is_json, path
        assert response.json["error"]["code"] == "not_found"


def test_status_counts_take_one_grouped_query(client: FlaskClient, services: Services) -> None:
    small, _ = add_connection(services, links=5)
    large, _ = add_connection(services, links=50)
    with statements(services) as few:
        assert client.get(f"/api/v1/accounts/{small}/connection", headers=AUTH).status_code == 200
    with statements(services) as many:
        response = client.get(f"/api/v1/accounts/{large}/connection", headers=AUTH)
    assert response.json["links"]["total"] == 50
    assert len(few) == len(many)
    assert sum("GROUP BY" in sql for sql in many) == 1
    assert sum("synced_links" in sql for sql in many) == 1


# Links ------------------------------------------------------------------------------------


def test_links_show_state_and_last_error(client: FlaskClient, services: Services) -> None:
    account, _ = add_connection(services, links=2)
    response = client.get(f"/api/v1/accounts/{account}/links", headers=AUTH)
    assert response.status_code == 200
    data = response.json["data"]
    assert set(data[0]) == {
        "source_id",
        "name",
        "url",
        "state",
        "close_link_id",
        "last_error",
        "last_synced_at",
    }
    assert data[0]["state"] == "error" and data[0]["last_error"] == "url is missing"
    assert data[1]["state"] == "synced" and data[1]["close_link_id"] == "schedlink_evt_1"
    assert response.json["next_cursor"] is None


def test_links_take_the_same_queries_for_5_and_50_links(
    client: FlaskClient, services: Services
) -> None:
    small, _ = add_connection(services, links=5)
    large, _ = add_connection(services, links=50)
    with statements(services) as few:
        assert len(client.get(f"/api/v1/accounts/{small}/links", headers=AUTH).json["data"]) == 5
    with statements(services) as many:
        assert len(client.get(f"/api/v1/accounts/{large}/links", headers=AUTH).json["data"]) == 50
    assert len(few) == len(many)
    assert sum("synced_links" in sql for sql in many) == 1


def test_links_are_paginated_by_cursor(client: FlaskClient, services: Services) -> None:
    account, _ = add_connection(services, links=50)
    with statements(services) as sql:
        first = client.get(f"/api/v1/accounts/{account}/links?limit=20", headers=AUTH).json
    assert len(first["data"]) == 20 and first["next_cursor"]
    assert sum("synced_links" in s for s in sql) == 1
    seen = [link["source_id"] for link in all_pages(client, account, 20)]
    assert seen == [f"evt_{n}" for n in range(50)]  # in order, each exactly once
    exact = all_pages(client, account, 25)  # the last full page says there is no more
    assert len(exact) == 50


def test_links_default_to_100_per_page_and_at_most_500(
    client: FlaskClient, services: Services
) -> None:
    account, _ = add_connection(services, links=120)
    page = client.get(f"/api/v1/accounts/{account}/links", headers=AUTH).json
    assert len(page["data"]) == 100 and page["next_cursor"]
    page = client.get(f"/api/v1/accounts/{account}/links?limit=500", headers=AUTH).json
    assert len(page["data"]) == 120 and page["next_cursor"] is None


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=abc", "limit"),
        ("limit=%C2%B2", "limit"),
        ("limit=-1", "limit"),
        ("cursor=abc", "cursor"),
        ("cursor=-5", "cursor"),
        ("cursor=%C2%B2", "cursor"),
        ("cursor=" + "9" * 40, "cursor"),
        ("limit=5&limit=6", "limit"),
        ("page=2", "page"),
    ],
)
def test_bad_link_queries_are_400_naming_the_parameter(
    client: FlaskClient, services: Services, query: str, field: str
) -> None:
    account, _ = add_connection(services, links=1)
    response = client.get(f"/api/v1/accounts/{account}/links?{query}", headers=AUTH)
    assert response.status_code == 400 and response.json["error"]["field"] == field


# Account isolation ------------------------------------------------------------------------


def test_one_accounts_identifiers_never_reveal_anothers_data(
    client: FlaskClient, services: Services
) -> None:
    a, _ = add_connection(services, links=30, prefix="alpha")
    b, _ = add_connection(services, links=3, prefix="beta")
    a_first = client.get(f"/api/v1/accounts/{a}/links?limit=10", headers=AUTH).json
    # B's listing, from the start or from a cursor taken from A's listing, shows only B's links.
    for url in (
        f"/api/v1/accounts/{b}/links",
        f"/api/v1/accounts/{b}/links?cursor={a_first['next_cursor']}",
        f"/api/v1/accounts/{b}/links?cursor=0&limit=500",
    ):
        text = client.get(url, headers=AUTH).get_data(as_text=True)
        assert "alpha" not in text, url
    assert {link["source_id"] for link in all_pages(client, b, 2)} == {
        "beta_0",
        "beta_1",
        "beta_2",
    }
    assert client.get(f"/api/v1/accounts/{b}/connection", headers=AUTH).json["links"]["total"] == 3
    # Ids that differ only in case or by a prefix are other accounts.
    for other in (a.upper(), a[:-1], a + "x", f" {a}"):
        assert client.get(f"/api/v1/accounts/{other}/links", headers=AUTH).status_code in (404, 400)


# Sync trigger and runs --------------------------------------------------------------------


def test_sync_trigger_records_a_queued_run_and_enqueues_after_commit(
    services: Services, enqueued: RecordingEnqueue
) -> None:
    account, cid = add_connection(services)
    visible_at_enqueue: list[bool] = []

    def enqueue(connection_id: int, trigger: str, run_id: int | None) -> None:
        # The worker reads the run in its own transaction: it must be committed already.
        with services.db.session() as other:
            visible_at_enqueue.append(other.get(SyncRun, run_id) is not None)
        enqueued(connection_id, trigger, run_id)

    client = create_app(services.settings, services=services, enqueue=enqueue).test_client()
    response = client.post(f"/api/v1/accounts/{account}/sync", headers=AUTH)
    assert response.status_code == 202
    run_id = response.json["run_id"]
    assert response.json == {"run_id": run_id, "status": "queued"}
    assert enqueued.calls == [(cid, "manual", run_id)]
    assert visible_at_enqueue == [True]

    run = client.get(f"/api/v1/sync-runs/{run_id}", headers=AUTH)
    assert run.status_code == 200
    body = run.json
    assert body["id"] == run_id and body["account_id"] == account
    assert body["trigger"] == "manual" and body["status"] == "queued"
    assert body["started_at"] is None and body["duration_seconds"] is None
    assert body["counts"] == {"created": 0, "updated": 0, "deleted": 0, "unchanged": 0, "failed": 0}
    assert body["progress"] == {"done": 0, "total": 0}


def test_a_finished_run_shows_timing_counts_and_error(
    client: FlaskClient, services: Services
) -> None:
    from datetime import timedelta

    account, cid = add_connection(services)
    started = utcnow()
    run_id = add_run(
        services,
        cid,
        status="partial",
        started_at=started,
        finished_at=started + timedelta(seconds=2.5),
        created=3,
        updated=1,
        deleted=2,
        unchanged=7,
        failed=1,
        progress_done=14,
        progress_total=14,
        error="1 link rejected by Close",
    )
    body = client.get(f"/api/v1/sync-runs/{run_id}", headers=AUTH).json
    assert body["account_id"] == account and body["status"] == "partial"
    assert body["duration_seconds"] == pytest.approx(2.5)
    assert body["counts"] == {"created": 3, "updated": 1, "deleted": 2, "unchanged": 7, "failed": 1}
    assert body["progress"] == {"done": 14, "total": 14}
    assert body["error"] == "1 link rejected by Close"


@pytest.mark.parametrize("status", INACTIVE)
def test_sync_of_an_inactive_connection_is_a_conflict_naming_the_status(
    client: FlaskClient, services: Services, enqueued: RecordingEnqueue, status: str
) -> None:
    account, cid = add_connection(services, status=status)
    response = client.post(f"/api/v1/accounts/{account}/sync", headers=AUTH)
    assert response.status_code == 409 and status in response.json["error"]["message"]
    assert enqueued.calls == []
    with services.db.session() as session:
        assert session.query(SyncRun).filter_by(connection_id=cid).count() == 0


# Disconnect -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("keep_links=maybe", "keep_links"),
        ("keep_links=TRUE", "keep_links"),
        ("keep_links=yes", "keep_links"),
        ("keep_links=", "keep_links"),
        ("keep_links=true&keep_links=false", "keep_links"),
        ("keep_link=true", "keep_link"),  # a typo must not delete the links
    ],
)
def test_keep_links_must_be_exactly_a_boolean(
    client: FlaskClient, services: Services, query: str, field: str
) -> None:
    account, cid = add_connection(services)
    response = client.delete(f"/api/v1/accounts/{account}/connection?{query}", headers=AUTH)
    assert response.status_code == 400 and response.json["error"]["field"] == field
    with services.db.session() as session:
        connection = session.get(Connection, cid)
        assert connection is not None and connection.status == ConnectionStatus.ACTIVE


@pytest.mark.parametrize(("keep_links", "flag"), [(False, "false"), (True, "true"), (True, "1")])
def test_disconnect_removes_our_links_revokes_and_keeps_a_record(
    client: FlaskClient, services: Services, sandbox: Any, source: Any, keep_links: bool, flag: str
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
        f"/api/v1/accounts/{account}/connection?keep_links={flag}", headers=AUTH
    )
    assert response.status_code == 200
    body = response.json
    assert body["status"] == "disconnected" and body["disconnected_at"]
    assert body["links"]["total"] == 0
    assert "token" not in response.get_data(as_text=True)
    assert len(our_links(sandbox)) == (3 if keep_links else 0)
    assert manual["id"] in {link["id"] for link in sandbox.state.links(user_id="user_jane")}
    assert sandbox.state.calls["oauth:revoke"] == 1
    with services.db.session() as session:
        connection = session.get(Connection, cid)
        assert connection is not None and connection.refresh_token_enc is None
        assert connection.access_token_enc is None
        assert connection.status == ConnectionStatus.DISCONNECTED
    # Idempotent, and the record stays readable.
    again = client.delete(f"/api/v1/accounts/{account}/connection", headers=AUTH)
    assert again.status_code == 200 and again.json["status"] == "disconnected"
    assert sandbox.state.calls["oauth:revoke"] == 1
    status = client.get(f"/api/v1/accounts/{account}/connection", headers=AUTH).json
    assert status["status"] == "disconnected"
    # A disconnected connection cannot be synced.
    assert client.post(f"/api/v1/accounts/{account}/sync", headers=AUTH).status_code == 409


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


# OpenAPI ----------------------------------------------------------------------------------


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_openapi_documents_exactly_the_routes_of_the_app(app: Flask) -> None:
    response = app.test_client().get("/api/v1/openapi.json")  # no API key needed
    assert response.status_code == 200
    doc = response.json
    assert doc["openapi"] == "3.1.0"
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    routed = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(("/api/", "/webhooks/")):
            path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
            routed |= {(path, m) for m in rule.methods or () if m not in ("HEAD", "OPTIONS")}
    routed.add((webhooks.PATH, "POST"))  # served by WebhookEndpoint, in front of Flask
    assert documented == routed
    assert ("/webhooks/source", "POST") in documented
    assert ("/api/v1/openapi.json", "GET") in documented


def test_openapi_is_self_contained_and_declares_parameters_security_and_errors(
    client: FlaskClient,
) -> None:
    doc = client.get("/api/v1/openapi.json").json
    components = doc["components"]
    for ref in set(_refs(doc)):
        kind, name = re.fullmatch(r"#/components/(schemas|responses)/(\w+)", ref).groups()  # type: ignore[union-attr]
        assert name in components[kind], ref
    assert "$defs" not in str(components["schemas"])
    assert components["securitySchemes"]["apiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "One of the API_KEYS",
    }
    error_statuses = {400, 401, 404, 409, 413, 415, 429}
    documented_errors: set[int] = set()
    for path, ops in doc["paths"].items():
        declared = set(re.findall(r"{(\w+)}", path))
        for method, op in ops.items():
            in_path = {p["name"] for p in op["parameters"] if p["in"] == "path"}
            assert in_path == declared, (path, method)
            for param in op["parameters"]:
                if param["name"] == "account_id":
                    assert param["schema"]["maxLength"] == 255
            documented_errors |= {int(s) for s in op["responses"] if int(s) >= 400}
            if path.startswith("/api/v1/") and path != "/api/v1/openapi.json":
                assert op["security"] == [{"apiKey": []}] and "401" in op["responses"]
    assert error_statuses <= documented_errors
    webhook = doc["paths"]["/webhooks/source"]["post"]
    assert webhook["security"] == []
    assert [p["name"] for p in webhook["parameters"] if p["in"] == "header"] == [
        "X-LinkSync-Signature"
    ]
    assert "Retry-After" in components["responses"]["TooManyRequests"]["headers"]
    links = doc["paths"]["/api/v1/accounts/{account_id}/links"]["get"]
    limit = next(p for p in links["parameters"] if p["name"] == "limit")
    assert limit["schema"]["maximum"] == 500 and limit["schema"]["default"] == 100
    connect_in = components["schemas"]["ConnectSessionIn"]
    assert connect_in["additionalProperties"] is False
