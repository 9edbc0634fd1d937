"""The operator console through HTTP: login, throttle, CSRF, search, constant queries, actions."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from flask.testing import FlaskClient
from sqlalchemy import event

from service import migrate
from service.app import create_app
from service.container import Services
from service.db import utcnow
from service.models import Connection, ConnectionStatus, LinkState, SyncedLink
from service.operators import hash_password
from service.settings import Settings
from tests.conftest import RecordingEnqueue, new_account

PASSWORD = "correct horse battery staple"


@pytest.fixture
def console(services: Services) -> Iterator[tuple[Services, FlaskClient]]:
    services.settings.OPERATOR_USERNAME = "ops"
    services.settings.OPERATOR_PASSWORD_HASH = hash_password(PASSWORD)
    yield services, create_app(services.settings, services=services).test_client()


def csrf(client: FlaskClient, path: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).get_data(as_text=True))
    assert match
    return match.group(1)


def login(client: FlaskClient, password: str = PASSWORD, username: str = "ops") -> int:
    token = csrf(client, "/admin/login")
    return client.post(
        "/admin/login", data={"username": username, "password": password, "csrf_token": token}
    ).status_code


def add(
    svc: Services, *, email: str = "jane@acme.com", org: str = "Acme Inc.", errors: int = 0
) -> int:
    with svc.db.session() as session:
        connection = Connection(
            account_id=new_account(),
            status=ConnectionStatus.ACTIVE,
            close_user_email=email,
            close_org_name=org,
            access_token_enc="CIPHERTEXT-never-shown",
            refresh_token_enc="CIPHERTEXT-never-shown",
            connected_at=utcnow(),
        )
        session.add(connection)
        session.flush()
        for n in range(errors):
            session.add(
                SyncedLink(
                    connection_id=connection.id,
                    source_id=f"e{n}",
                    state=LinkState.ERROR,
                    last_error="url is missing",
                )
            )
        return connection.id


def test_everything_needs_a_login(console: tuple[Services, FlaskClient]) -> None:
    _, client = console
    for path in ("/admin/", "/admin/connections", "/admin/connections/1", "/admin/failures"):
        response = client.get(path)
        assert response.status_code == 302 and "/admin/login" in response.headers["Location"]
    assert client.get("/admin/api/activity.json").status_code == 401


def test_login_logout_and_wrong_password(console: tuple[Services, FlaskClient]) -> None:
    _, client = console
    assert login(client, "wrong") == 401
    assert login(client, username="nobody") == 401
    assert login(client) == 303
    assert client.get("/admin/").status_code == 200
    token = csrf(client, "/admin/")
    assert client.post("/admin/logout", data={"csrf_token": token}).status_code == 303
    assert client.get("/admin/").status_code == 302


def test_five_failures_throttle_the_login(console: tuple[Services, FlaskClient]) -> None:
    _, client = console
    for _ in range(5):
        assert login(client, "wrong", username="throttled-ops") == 401
    assert login(client, "wrong", username="throttled-ops") == 429


def test_forms_need_csrf(console: tuple[Services, FlaskClient]) -> None:
    svc, client = console
    cid = add(svc)
    assert (
        client.post("/admin/login", data={"username": "ops", "password": PASSWORD}).status_code
        == 400
    )
    login(client)
    assert client.post(f"/admin/connections/{cid}/resync").status_code == 400


def test_search_filter_and_no_secrets(console: tuple[Services, FlaskClient]) -> None:
    svc, client = console
    add(svc, email="zed@globex.com", org="Globex Corp.", errors=2)
    login(client)
    page = client.get("/admin/connections?q=ZED@globex").get_data(as_text=True)
    assert "zed@globex.com" in page and "CIPHERTEXT" not in page
    assert "zed@globex.com" not in client.get("/admin/connections?status=needs_reauth").get_data(
        as_text=True
    )
    assert "Globex Corp." in client.get("/admin/connections?q=globex+corp").get_data(as_text=True)
    failures = client.get("/admin/failures").get_data(as_text=True)
    assert "url is missing" in failures


def test_connections_page_uses_constant_queries(console: tuple[Services, FlaskClient]) -> None:
    svc, client = console
    login(client)
    statements: list[str] = []

    def count(_c, _cur, statement, *_a) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    @contextmanager
    def counting() -> Iterator[list[str]]:
        statements.clear()
        event.listen(svc.db.engine, "before_cursor_execute", count)
        try:
            yield statements
        finally:
            event.remove(svc.db.engine, "before_cursor_execute", count)

    for _ in range(5):
        add(svc, errors=1)
    with counting():
        client.get("/admin/connections")
    few = len(statements)
    for _ in range(55):
        add(svc, errors=1)
    with counting():
        client.get("/admin/connections")
    assert len(statements) == few


def test_resync_and_reconcile_enqueue_after_commit(
    console: tuple[Services, FlaskClient], enqueued: RecordingEnqueue
) -> None:
    svc, client = console
    cid = add(svc)
    login(client)
    token = csrf(client, f"/admin/connections/{cid}")
    assert (
        client.post(f"/admin/connections/{cid}/resync", data={"csrf_token": token}).status_code
        == 303
    )
    assert (
        client.post(f"/admin/connections/{cid}/reconcile", data={"csrf_token": token}).status_code
        == 303
    )
    assert [(c[0], c[1]) for c in enqueued.calls] == [(cid, "manual"), (cid, "reconcile")]
    page = client.get(f"/admin/connections/{cid}").get_data(as_text=True)
    assert page.count("queued") >= 2


def test_console_is_disabled_without_credentials(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    migrate.upgrade(settings.database_url)
    client = create_app(
        settings, services=Services(settings, enqueue=RecordingEnqueue())
    ).test_client()
    response = client.get("/admin/login")
    assert response.status_code == 404 and "OPERATOR_USERNAME" in response.get_data(as_text=True)
