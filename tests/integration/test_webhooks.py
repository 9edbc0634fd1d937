"""POST /webhooks/source: every accepted and rejected case, on SQLite and PostgreSQL + Redis.
A rejected webhook enqueues nothing and stores no delivery."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from service.api.signatures import sign
from service.app import create_app
from service.container import Services
from service.models import Connection, ConnectionStatus, WebhookDelivery
from tests.conftest import WEBHOOK_SECRET, RecordingEnqueue, new_account


@pytest.fixture
def client(services: Services) -> Iterator[FlaskClient]:
    yield create_app(services.settings, services=services).test_client()


def add_connection(svc: Services, status: str = ConnectionStatus.ACTIVE) -> tuple[str, int]:
    account = new_account()
    with svc.db.session() as session:
        connection = Connection(account_id=account, status=status)
        session.add(connection)
        session.flush()
        return account, connection.id


def body_for(account: str, **overrides: Any) -> bytes:
    event = {"id": uuid.uuid4().hex, "type": "event_types.changed", "account_id": account}
    event.update(overrides)
    return json.dumps(event).encode()


def post(
    client: FlaskClient,
    body: bytes,
    *,
    at: float | None = None,
    secret: str = WEBHOOK_SECRET,
    content_type: str = "application/json",
    header: str | None = None,
) -> Any:
    t = int(at if at is not None else time.time())
    signature = header if header is not None else f"t={t},v1={sign(secret, t, body)}"
    headers = {"X-LinkSync-Signature": signature} if signature else {}
    return client.post("/webhooks/source", data=body, headers=headers, content_type=content_type)


def deliveries(svc: Services) -> int:
    with svc.db.session() as session:
        return session.scalar(select(func.count()).select_from(WebhookDelivery)) or 0


def test_valid_webhook_is_accepted_at_once_and_enqueues_one_sync(
    client: FlaskClient, services: Services, enqueued: RecordingEnqueue
) -> None:
    account, cid = add_connection(services)
    response = post(client, body_for(account))
    assert response.status_code == 202 and response.json == {"status": "accepted"}
    assert enqueued.calls == [(cid, "webhook", None)]


def test_a_burst_of_fifty_enqueues_at_most_two(
    client: FlaskClient, services: Services, enqueued: RecordingEnqueue
) -> None:
    account, _ = add_connection(services)
    statuses = {post(client, body_for(account)).status_code for _ in range(50)}
    assert statuses == {202}
    assert 1 <= len(enqueued.calls) <= 2


def test_repeated_event_id_is_accepted_and_ignored(
    client: FlaskClient, services: Services, enqueued: RecordingEnqueue
) -> None:
    account, _ = add_connection(services)
    body = body_for(account, id="evt-repeat-" + uuid.uuid4().hex)
    assert post(client, body).status_code == 202
    again = post(client, body)
    assert again.status_code == 202 and again.json == {"status": "duplicate"}
    assert len(enqueued.calls) == 1


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("no_header", 401),
        ("forged", 401),
        ("wrong_secret", 401),
        ("garbage_header", 401),
        ("stale", 401),
        ("future", 401),
        ("wrong_content_type", 415),
        ("malformed_json", 400),
        ("not_an_object", 400),
        ("missing_id", 400),
        ("unknown_type", 400),
        ("path_traversal_account", 400),
        ("unknown_account", 404),
        ("oversized", 413),
    ],
)
def test_rejected_webhooks_enqueue_nothing_and_store_nothing(
    client: FlaskClient, services: Services, enqueued: RecordingEnqueue, case: str, status: int
) -> None:
    account, _ = add_connection(services)
    before = deliveries(services)
    good = body_for(account)
    now = time.time()
    responses = {
        "no_header": lambda: post(client, good, header=""),
        "forged": lambda: post(client, good, header=f"t={int(now)},v1={'0' * 64}"),
        "wrong_secret": lambda: post(client, good, secret="not-the-secret"),
        "garbage_header": lambda: post(client, good, header="<script>alert(1)</script>"),
        "stale": lambda: post(client, good, at=now - 360),
        "future": lambda: post(client, good, at=now + 360),
        "wrong_content_type": lambda: post(client, good, content_type="text/plain"),
        "malformed_json": lambda: post(client, b"{not json"),
        "not_an_object": lambda: post(client, b"[1, 2]"),
        "missing_id": lambda: post(
            client, json.dumps({"type": "event_types.changed", "account_id": account}).encode()
        ),
        "unknown_type": lambda: post(client, body_for(account, type="event_types.exploded")),
        "path_traversal_account": lambda: post(client, body_for("../../etc/passwd")),
        "unknown_account": lambda: post(client, body_for("no-such-account-" + uuid.uuid4().hex)),
        "oversized": lambda: post(
            client, body_for(account, pad="x" * (services.settings.WEBHOOK_MAX_BODY_BYTES + 10))
        ),
    }
    response = responses[case]()
    assert response.status_code == status
    assert response.is_json and set(response.json["error"]) >= {"code", "message"}
    assert enqueued.calls == []
    assert deliveries(services) == before


def test_stale_timestamp_within_five_minutes_is_accepted(
    client: FlaskClient, services: Services, enqueued: RecordingEnqueue
) -> None:
    account, _ = add_connection(services)
    assert post(client, body_for(account), at=time.time() - 240).status_code == 202
    assert post(client, body_for(account), at=time.time() + 120).status_code == 202


def test_inactive_connection_is_a_conflict(
    client: FlaskClient, services: Services, enqueued: RecordingEnqueue
) -> None:
    account, _ = add_connection(services, ConnectionStatus.NEEDS_REAUTH)
    response = post(client, body_for(account))
    assert response.status_code == 409 and "needs_reauth" in response.json["error"]["message"]
    assert enqueued.calls == []


def test_flood_of_one_account_is_rate_limited(
    services: Services, enqueued: RecordingEnqueue
) -> None:
    services.settings.WEBHOOK_RATE_LIMIT_PER_MINUTE = 5
    client = create_app(services.settings, services=services).test_client()
    account, _ = add_connection(services)
    statuses = [post(client, body_for(account)).status_code for _ in range(8)]
    assert statuses[:5] == [202] * 5 and statuses[5:] == [429] * 3
    limited = post(client, body_for(account))
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
