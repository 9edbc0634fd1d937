"""Hostile input on every public surface: a clear 4xx (JSON for the API, a page for the
browser), never a 5xx or a stack trace, and the database unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from service.app import create_app
from service.infra.models import Connection, ConnectSession, OAuthState, SyncRun, WebhookDelivery
from service.services import Services
from tests.conftest import API_KEY

AUTH = {"Authorization": f"Bearer {API_KEY}"}
NASTY = [
    "../../etc/passwd",
    "..%2F..%2Fetc",
    "' OR '1'='1' --",
    "<script>alert(1)</script>",
    "a\x00b",
    "a" * 300,
    "%00",
    "${jndi:ldap://x}",
    "\u202e\u0000",
]


@pytest.fixture
def client(services: Services) -> Iterator[FlaskClient]:
    yield create_app(services.settings, services=services).test_client()


def snapshot(svc: Services) -> tuple[int, ...]:
    with svc.db.session() as session:
        return tuple(
            session.scalar(select(func.count()).select_from(model)) or 0
            for model in (Connection, ConnectSession, OAuthState, SyncRun, WebhookDelivery)
        )


@pytest.mark.parametrize("nasty", NASTY)
def test_nasty_identifiers_in_every_api_route(
    client: FlaskClient, services: Services, nasty: str
) -> None:
    before = snapshot(services)
    segment = quote(nasty, safe="")
    for method, path in [
        ("get", f"/api/v1/accounts/{segment}/connection"),
        ("get", f"/api/v1/accounts/{segment}/links"),
        ("post", f"/api/v1/accounts/{segment}/sync"),
        ("delete", f"/api/v1/accounts/{segment}/connection"),
        ("get", f"/api/v1/sync-runs/{segment}"),
        ("get", f"/api/v1/accounts/a/links?cursor={segment}&limit={segment}"),
    ]:
        response = getattr(client, method)(path, headers=AUTH)
        assert 400 <= response.status_code < 500, (path, response.status_code)
        assert response.is_json and "Traceback" not in response.get_data(as_text=True)
    response = client.post("/api/v1/connect-sessions", json={"account_id": nasty}, headers=AUTH)
    assert response.status_code in (201, 400)  # odd but harmless ids are allowed, stored verbatim
    if response.status_code == 201:
        before = (before[0], before[1] + 1, *before[2:])
    assert snapshot(services) == before


@pytest.mark.parametrize("nasty", NASTY)
def test_nasty_connect_tokens_get_a_friendly_page(
    client: FlaskClient, services: Services, nasty: str
) -> None:
    before = snapshot(services)
    segment = quote(nasty, safe="")
    for path in (
        f"/connect/{segment}",
        f"/connect/{segment}/status.json",
        f"/oauth/close/callback?state={segment}&code={segment}",
    ):
        response = client.get(path)
        assert 400 <= response.status_code < 500, (path, response.status_code)
        assert "Traceback" not in response.get_data(as_text=True)
    assert snapshot(services) == before


def test_oversized_api_body_is_413_json(client: FlaskClient, services: Services) -> None:
    before = snapshot(services)
    body = '{"account_id": "' + "x" * 200_000 + '"}'
    response = client.post(
        "/api/v1/connect-sessions", data=body, headers=AUTH, content_type="application/json"
    )
    assert response.status_code == 413 and response.is_json
    assert snapshot(services) == before


def test_wrong_content_types_and_methods(client: FlaskClient) -> None:
    assert (
        client.post(
            "/api/v1/connect-sessions", data="<xml/>", headers=AUTH, content_type="application/xml"
        ).status_code
        == 415
    )
    response = client.put("/api/v1/connect-sessions", headers=AUTH)
    assert response.status_code == 405 and "POST" in response.headers["Allow"] and response.is_json
    assert client.get("/no/such/page").status_code == 404


def test_unexpected_errors_are_a_generic_500_without_details(services: Services) -> None:
    app = create_app(services.settings, services=services)

    @app.get("/api/v1/_boom")
    def boom() -> str:
        raise RuntimeError("secret internals")

    response = app.test_client().get("/api/v1/_boom")
    assert response.status_code == 500
    assert "secret internals" not in response.get_data(as_text=True) and response.is_json
