"""Outages of the broker and the database, with real worker processes on a private
redis-server (started here on its own port, so it can be stopped) and the test PostgreSQL."""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from service.api.signatures import sign
from service.app import create_app
from service.infra.models import Connection, SyncRun
from service.jobs import celery_enqueue
from service.services import Services
from service.settings import Settings
from tests.chaos.conftest import RedisServer
from tests.conftest import API_KEY, WEBHOOK_SECRET, WorkerProcess, new_account, wait_until
from tests.helpers import connect_directly, event_type, our_links

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def outage_settings(
    make_settings: Callable[..., Settings], pg_url: str, private_redis: RedisServer
) -> Settings:
    return make_settings(
        DATABASE_URL=pg_url,
        REDIS_URL=private_redis.url,
        SYNC_LOCK_TTL_SECONDS=6,
        SCHEDULER_TICK_SECONDS=1,
    )


def webhook(client: FlaskClient, account: str) -> Any:
    body = json.dumps(
        {"id": uuid.uuid4().hex, "type": "event_types.changed", "account_id": account}
    ).encode()
    t = int(time.time())
    return client.post(
        "/webhooks/source",
        data=body,
        headers={
            "Content-Type": "application/json",
            "X-LinkSync-Signature": f"t={t},v1={sign(WEBHOOK_SECRET, t, body)}",
        },
    )


def response_task_id(logs: str) -> str:
    marker = "linksync.sync_connection["
    start = logs.index(marker) + len(marker)
    return logs[start : logs.index("]", start)]


def runs(svc: Services, cid: int) -> list[SyncRun]:
    with svc.db.session() as session:
        return list(
            session.scalars(
                select(SyncRun).where(SyncRun.connection_id == cid).order_by(SyncRun.id)
            )
        )


def requested_at(svc: Services, cid: int) -> Any:
    with svc.db.session() as session:
        connection = session.get(Connection, cid)
        assert connection is not None
        return connection.sync_requested_at


def test_syncs_requested_while_the_broker_is_down_happen_once_it_is_back(
    outage_settings: Settings,
    private_redis: RedisServer,
    start_worker: Callable[..., WorkerProcess],
    sandbox: Any,
    source: Any,
) -> None:
    svc = Services(outage_settings, enqueue=celery_enqueue(outage_settings))
    client = create_app(outage_settings, services=svc).test_client()
    api_account, hook_account = new_account(), new_account()
    source.store.put_all(api_account, [event_type(n, api_account) for n in range(1, 4)])
    source.store.put_all(hook_account, [event_type(n, hook_account) for n in range(1, 4)])
    api_cid = connect_directly(svc, sandbox, api_account)
    sandbox.state.add_user("user_hook", "Hook", "User", "hook@acme.com", ["orga_acme"])
    hook_cid = connect_directly(svc, sandbox, hook_account, user_id="user_hook")
    worker = start_worker(outage_settings, beat=True)

    private_redis.stop()
    response = client.post(
        f"/api/v1/accounts/{api_account}/sync", headers={"Authorization": f"Bearer {API_KEY}"}
    )
    assert response.status_code == 202, response.json
    run_id = response.json["run_id"]
    assert webhook(client, hook_account).status_code == 202
    assert requested_at(svc, api_cid) is not None and requested_at(svc, hook_cid) is not None
    time.sleep(3)
    assert our_links(sandbox) == {} and our_links(sandbox, "user_hook") == {}

    private_redis.start()  # empty: the wake-ups sent while it was down are gone for good
    wait_until(lambda: len(our_links(sandbox)) == 3, timeout=40)
    wait_until(lambda: len(our_links(sandbox, "user_hook")) == 3, timeout=20)
    # The API's own run did the work (no second request, no stray queued run).
    wait_until(lambda: runs(svc, api_cid)[0].status == "succeeded", timeout=10)
    assert runs(svc, api_cid)[0].id == run_id
    assert requested_at(svc, api_cid) is None and requested_at(svc, hook_cid) is None
    assert [r.status for r in runs(svc, api_cid)].count("queued") == 0
    assert worker.alive
    svc.close()


def test_worker_survives_a_broker_outage_while_a_sync_runs(
    outage_settings: Settings,
    private_redis: RedisServer,
    start_worker: Callable[..., WorkerProcess],
    sandbox: Any,
    source: Any,
) -> None:
    """Issue #11 (b): the broker connection drops while the worker holds an unacknowledged
    task. With the defences of service.jobs (no gossip/mingle/heartbeat, unlimited broker
    reconnects, health checks) the worker reconnects, and the sync completes or is re-run."""
    svc = Services(outage_settings, enqueue=celery_enqueue(outage_settings))
    client = create_app(outage_settings, services=svc).test_client()
    account = new_account()
    items = [event_type(n, account) for n in range(1, 301)]
    source.store.put_all(account, items)
    connect_directly(svc, sandbox, account)
    sandbox.state.config.rate_limit_per_token = 1000.0
    sandbox.state.set_faults(latency_ms=120)
    worker = start_worker(outage_settings, beat=True)
    response = client.post(
        f"/api/v1/accounts/{account}/sync", headers={"Authorization": f"Bearer {API_KEY}"}
    )
    assert response.status_code == 202
    wait_until(lambda: len(our_links(sandbox)) >= 20, timeout=30, interval=0.05)
    assert len(our_links(sandbox)) < 300  # still running
    private_redis.stop()
    time.sleep(10)
    assert worker.alive, worker.log_path.read_text()[-3000:]
    private_redis.start()
    sandbox.state.set_faults()
    wait_until(lambda: len(our_links(sandbox)) == 300, timeout=90)
    assert {sid: link["name"] for sid, link in our_links(sandbox).items()} == {
        i["id"]: i["name"] for i in items
    }
    assert len(sandbox.state.links(user_id="user_jane")) == 300  # nothing written twice
    time.sleep(3)
    assert worker.alive, worker.log_path.read_text()[-3000:]
    assert "Unrecoverable error" not in worker.log_path.read_text()
    svc.close()


def test_a_sync_longer_than_the_visibility_timeout_never_runs_twice_at_once(
    make_settings: Callable[..., Settings],
    pg_url: str,
    private_redis: RedisServer,
    start_worker: Callable[..., WorkerProcess],
    sandbox: Any,
    source: Any,
) -> None:
    """A 3 s visibility timeout and a ~20 s sync: a worker that starts meanwhile restores the
    unacked task (older than the timeout) and runs it while the first worker still does; the
    sync lock makes the copy wait (dirty flag + retry) instead of syncing beside the original."""
    settings = make_settings(
        DATABASE_URL=pg_url,
        REDIS_URL=private_redis.url,
        SYNC_LOCK_TTL_SECONDS=6,
        BROKER_VISIBILITY_TIMEOUT_SECONDS=3,
    )
    svc = Services(settings, enqueue=celery_enqueue(settings))
    client = create_app(settings, services=svc).test_client()
    account = new_account()
    items = [event_type(n, account) for n in range(1, 301)]
    source.store.put_all(account, items)
    cid = connect_directly(svc, sandbox, account)
    sandbox.state.config.rate_limit_per_token = 1000.0
    sandbox.state.set_faults(latency_ms=250)
    workers = [start_worker(settings)]
    response = client.post(
        f"/api/v1/accounts/{account}/sync", headers={"Authorization": f"Bearer {API_KEY}"}
    )
    assert response.status_code == 202
    wait_until(lambda: len(our_links(sandbox)) >= 10, timeout=30, interval=0.05)
    time.sleep(4)  # the unacked task is now older than the visibility timeout
    workers.append(start_worker(settings))
    wait_until(lambda: len(our_links(sandbox)) == 300, timeout=120)
    sandbox.state.set_faults()
    wait_until(lambda: all(r.status not in ("queued", "running") for r in runs(svc, cid)), 60)
    logs = "".join(w.log_path.read_text() for w in workers)
    task_id = response_task_id(logs)
    assert logs.count(f"linksync.sync_connection[{task_id}] received") >= 2, (
        "the task was never redelivered: this test proves nothing"
    )
    executed = sorted(
        (r.started_at, r.finished_at) for r in runs(svc, cid) if r.started_at is not None
    )
    for (_, first_end), (second_start, _) in itertools.pairwise(executed):
        assert first_end is not None and first_end <= second_start, executed
    assert len(sandbox.state.links(user_id="user_jane")) == 300  # nothing written twice
    assert all(w.alive for w in workers)
    svc.close()
