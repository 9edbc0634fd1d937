"""The web while the database is away (503 database_unavailable, never 500, recovery without a
restart) and the workers' heartbeat in /readyz."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from service.api.signatures import sign
from service.app import create_app
from service.infra import heartbeats, locks
from service.services import Services
from service.settings import Settings
from tests.conftest import API_KEY, PG_ADMIN_URL, WEBHOOK_SECRET, new_account
from tests.helpers import connect_directly


def signed(account: str) -> dict[str, Any]:
    body = json.dumps(
        {"id": uuid.uuid4().hex, "type": "event_types.changed", "account_id": account}
    ).encode()
    t = int(time.time())
    return {
        "data": body,
        "headers": {
            "Content-Type": "application/json",
            "X-LinkSync-Signature": f"t={t},v1={sign(WEBHOOK_SECRET, t, body)}",
        },
    }


class DatabaseAway:
    """Refuses new connections to the test database and terminates the open ones: the
    database is away for this service, while the shared cluster keeps running."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> DatabaseAway:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS false')
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (self.name,),
            )
        return self

    def __exit__(self, *exc: object) -> None:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true')


@pytest.fixture
def pg_services(pg_settings: Settings, enqueued: Any) -> Iterator[Services]:
    svc = Services(pg_settings, enqueue=enqueued)
    yield svc
    svc.close()


@pytest.mark.postgres
def test_database_away_answers_503_then_recovers_without_a_restart(
    pg_services: Services, sandbox: Any, source: Any, enqueued: Any
) -> None:
    account = new_account()
    cid = connect_directly(pg_services, sandbox, account)
    client = create_app(pg_services.settings, services=pg_services).test_client()
    auth = {"Authorization": f"Bearer {API_KEY}"}
    assert client.post("/webhooks/source", **signed(account)).status_code == 202
    name = pg_services.db.engine.url.database
    assert name is not None
    with DatabaseAway(name):
        hook = client.post("/webhooks/source", **signed(account))
        sync = client.post(f"/api/v1/accounts/{account}/sync", headers=auth)
        ready = client.get("/readyz")
        page = client.get(f"/api/v1/accounts/{account}/connection", headers=auth)
    for response in (hook, sync, page):
        assert response.status_code == 503, response.data
        assert response.json["error"]["code"] == "database_unavailable"
        assert response.headers["Retry-After"] == "5"
    assert ready.status_code == 503
    # Back: the pool reconnects (pool_pre_ping), no restart.
    assert client.post("/webhooks/source", **signed(account)).status_code == 202
    synced = client.post(f"/api/v1/accounts/{account}/sync", headers=auth)
    assert synced.status_code == 202
    assert (cid, "manual", synced.json["run_id"]) in enqueued.calls


def test_readyz_reports_workers_and_requires_them_only_when_asked(services: Services) -> None:
    # Workers of earlier tests in this session's Redis db left their heartbeats: start from
    # none, as a fresh deployment would.
    if services.redis is not None:
        stale_keys = list(services.redis.scan_iter(f"linksync:{locks.WORKER_HEARTBEAT_PREFIX}*"))
        if stale_keys:
            services.redis.delete(*stale_keys)
    client = create_app(services.settings, services=services).test_client()
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json["checks"]["workers"].startswith("no worker has reported in")
    services.settings.READYZ_REQUIRE_WORKER = True
    strict = client.get("/readyz")
    assert strict.status_code == 503 and "workers" in strict.json["reason"]
    heartbeats.record(services.coordinator, "celery@test-host")
    alive = client.get("/readyz")
    assert alive.status_code == 200 and alive.json["checks"]["workers"] == "ok (1 alive)"
    heartbeats.record(services.coordinator, "celery@test-host", now=time.time() - 120)
    stale = client.get("/readyz")
    assert stale.status_code == 503
    assert stale.json["checks"]["workers"] == "no worker has reported in 120 s"
