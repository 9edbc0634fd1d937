"""POST /api/v1/accounts/{id}/sync with the optional {"reconcile": true} body."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from service.services import Services
from tests.api.test_api import AUTH, add_connection
from tests.conftest import RecordingEnqueue


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def app(services: Services) -> Flask:
    from service.app import create_app

    return create_app(services.settings, services=services)


def trigger_of(client: FlaskClient, run_id: int) -> str:
    return str(client.get(f"/api/v1/sync-runs/{run_id}", headers=AUTH).json["trigger"])


def test_reconcile_true_queues_a_reconcile_run(
    client: FlaskClient, services: Services, enqueued: RecordingEnqueue
) -> None:
    account, cid = add_connection(services)
    response = client.post(
        f"/api/v1/accounts/{account}/sync", json={"reconcile": True}, headers=AUTH
    )
    assert response.status_code == 202
    run_id = response.json["run_id"]
    assert enqueued.calls[-1] == (cid, "reconcile", run_id)
    assert trigger_of(client, run_id) == "reconcile"


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"json": {}},
        {"json": {"reconcile": False}},
        {"data": b"", "content_type": "application/json"},
        {"data": b"", "content_type": "text/plain"},
    ],
)
def test_an_empty_or_false_body_is_a_plain_resync_as_before(
    client: FlaskClient, services: Services, enqueued: RecordingEnqueue, kwargs: dict[str, object]
) -> None:
    account, cid = add_connection(services)
    response = client.post(f"/api/v1/accounts/{account}/sync", headers=AUTH, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 202, response.json
    assert enqueued.calls[-1][:2] == (cid, "manual")


@pytest.mark.parametrize(
    ("kwargs", "status", "field"),
    [
        ({"json": {"reconcile": "yes"}}, 400, "reconcile"),
        ({"json": {"reconcile": True, "x": 1}}, 400, "x"),
        ({"data": b"[]", "content_type": "application/json"}, 400, None),
        ({"data": b'{"reconcile": true}', "content_type": "text/plain"}, 415, None),
    ],
)
def test_a_bad_body_is_a_4xx_naming_the_problem(
    client: FlaskClient,
    services: Services,
    kwargs: dict[str, object],
    status: int,
    field: str | None,
) -> None:
    account, _cid = add_connection(services)
    response = client.post(f"/api/v1/accounts/{account}/sync", headers=AUTH, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == status
    assert response.json["error"]["code"]
    if field:
        assert response.json["error"].get("field") == field


def test_openapi_documents_the_optional_body(client: FlaskClient) -> None:
    doc = client.get("/api/v1/openapi.json").json
    body = doc["paths"]["/api/v1/accounts/{account_id}/sync"]["post"]["requestBody"]
    assert body["required"] is False
    assert "application/json" in body["content"]
