"""End to end through a real Celery worker process on Redis and PostgreSQL."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from service.api.signatures import sign
from service.app import create_app
from service.infra.models import Connection, SyncRun
from service.jobs import celery_enqueue
from service.services import Services
from service.settings import Settings
from service.sync.triggers import request_sync
from tests.conftest import WEBHOOK_SECRET, WorkerProcess, new_account, wait_until
from tests.helpers import connect_directly, event_type, our_links

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def stack(
    make_settings: Callable[..., Settings],
    pg_url: str,
    redis_url: str,
    start_worker: Callable[..., WorkerProcess],
) -> tuple[Services, FlaskClient, Callable[..., WorkerProcess]]:
    # A short lock TTL so a killed worker's lock expires within the test.
    settings = make_settings(DATABASE_URL=pg_url, REDIS_URL=redis_url, SYNC_LOCK_TTL_SECONDS=6)
    svc = Services(settings, enqueue=celery_enqueue(settings))
    app = create_app(settings, services=svc)
    return svc, app.test_client(), start_worker


def webhook(client: FlaskClient, account: str, event_id: str | None = None) -> int:
    body = json.dumps(
        {"id": event_id or uuid.uuid4().hex, "type": "event_types.changed", "account_id": account}
    ).encode()
    t = int(time.time())
    response = client.post(
        "/webhooks/source",
        data=body,
        headers={
            "Content-Type": "application/json",
            "X-LinkSync-Signature": f"t={t},v1={sign(WEBHOOK_SECRET, t, body)}",
        },
    )
    return response.status_code


def runs(svc: Services, cid: int) -> list[SyncRun]:
    with svc.db.session() as session:
        return list(
            session.scalars(
                select(SyncRun).where(SyncRun.connection_id == cid).order_by(SyncRun.id)
            )
        )


def test_connect_sync_then_webhook_updates_close_within_seconds(
    stack: tuple[Services, FlaskClient, Callable[..., WorkerProcess]], sandbox: Any, source: Any
) -> None:
    svc, client, start_worker = stack
    start_worker(svc.settings)
    account = new_account()
    source.store.put_all(account, [event_type(n, account) for n in range(1, 6)])
    cid = connect_directly(svc, sandbox, account)
    with svc.db.session() as session:
        connection = session.get(Connection, cid)
        assert connection is not None
        request_sync(session, svc, connection, "connect")
    wait_until(lambda: len(our_links(sandbox)) == 5, timeout=20)

    source.store.update(account, "evt_3", name="Changed by the admin")
    sent = time.monotonic()
    assert webhook(client, account) == 202
    wait_until(
        lambda: our_links(sandbox)["evt_3"]["name"] == "Changed by the admin",
        timeout=10,
        interval=0.02,
    )
    latency = time.monotonic() - sent
    print(f"\nwebhook-to-Close latency: {latency * 1000:.0f} ms")
    assert latency < 5


def test_a_burst_of_webhooks_causes_one_or_two_syncs(
    stack: tuple[Services, FlaskClient, Callable[..., WorkerProcess]], sandbox: Any, source: Any
) -> None:
    svc, client, start_worker = stack
    account = new_account()
    source.store.put_all(account, [event_type(n, account) for n in range(1, 4)])
    cid = connect_directly(svc, sandbox, account)
    start_worker(svc.settings)
    source.store.update(account, "evt_1", name="Burst change")
    # A run slower than the burst (as a real Close is slower than 50 local requests), so the
    # count does not depend on how loaded the machine is: the first run starts with the first
    # webhook, the rest of the burst arrives while it runs and owes exactly one more run.
    sandbox.state.config.latency_ms = 2000
    statuses = [webhook(client, account) for _ in range(50)]
    assert statuses == [202] * 50
    wait_until(
        lambda: our_links(sandbox).get("evt_1", {}).get("name") == "Burst change", timeout=15
    )
    time.sleep(1.5)  # let any follow-up run finish before counting
    executed = [r for r in runs(svc, cid) if r.status not in ("coalesced",)]
    assert 1 <= len(executed) <= 2, [(r.trigger, r.status) for r in executed]


def test_worker_killed_mid_sync_then_a_new_worker_converges_exactly(
    stack: tuple[Services, FlaskClient, Callable[..., WorkerProcess]], sandbox: Any, source: Any
) -> None:
    svc, _client, start_worker = stack
    account = new_account()
    items = [event_type(n, account) for n in range(1, 201)]
    source.store.put_all(account, items)
    cid = connect_directly(svc, sandbox, account)
    sandbox.state.set_faults(latency_ms=40)
    sandbox.state.config.rate_limit_per_token = 1000.0
    worker = start_worker(svc.settings)
    with svc.db.session() as session:
        connection = session.get(Connection, cid)
        assert connection is not None
        request_sync(session, svc, connection, "manual")
    wait_until(lambda: len(our_links(sandbox)) >= 40, timeout=30, interval=0.02)
    worker.kill()  # SIGKILL: no cleanup, the lock stays until its TTL
    done_at_kill = len(our_links(sandbox))
    assert done_at_kill < 200
    sandbox.state.set_faults()

    start_worker(svc.settings)
    with svc.db.session() as session:
        connection = session.get(Connection, cid)
        assert connection is not None
        request_sync(session, svc, connection, "manual")
    wait_until(
        lambda: len(our_links(sandbox)) == 200, timeout=svc.settings.SYNC_LOCK_TTL_SECONDS + 30
    )
    wait_until(lambda: runs(svc, cid)[-1].status == "succeeded", timeout=30)
    assert {sid: link["name"] for sid, link in our_links(sandbox).items()} == {
        i["id"]: i["name"] for i in items
    }
    assert len(sandbox.state.links(user_id="user_jane")) == 200  # no duplicates
    with svc.db.session() as session:
        counted = session.scalar(
            select(func.count()).select_from(SyncRun).where(SyncRun.connection_id == cid)
        )
        assert counted is not None and counted >= 2


def test_embedded_default_worker_consumes_the_sqlite_broker(
    make_settings: Callable[..., Settings],
    start_worker: Callable[..., WorkerProcess],
    sandbox: Any,
    source: Any,
) -> None:
    """No Redis, no PostgreSQL: SQLite for data, kombu's SQLAlchemy transport for the queue,
    and the database for locks, with a worker in another process."""
    from service.infra import migrate

    settings = make_settings()  # SQLite, REDIS_URL unset
    migrate.upgrade(settings.database_url)
    svc = Services(settings, enqueue=celery_enqueue(settings))
    account = new_account()
    source.store.put_all(account, [event_type(n, account) for n in range(1, 4)])
    cid = connect_directly(svc, sandbox, account)
    start_worker(settings)
    with svc.db.session() as session:
        connection = session.get(Connection, cid)
        assert connection is not None
        request_sync(session, svc, connection, "connect")
    wait_until(lambda: len(our_links(sandbox)) == 3, timeout=20)
    wait_until(lambda: runs(svc, cid)[-1].status == "succeeded", timeout=10)
    assert (settings.INSTANCE_PATH / "broker.sqlite").exists()


@pytest.mark.redis
def test_a_sync_message_carries_its_arguments_and_their_repr_for_the_workers_log(
    pg_settings: Settings, redis_client: Any
) -> None:
    """send_sync gives Celery the arguments' repr instead of letting it compute a bounded
    saferepr on every publish: the message still carries the real arguments (the body) and
    the same text Celery would have logged (the headers)."""
    from service.jobs import TASK_SYNC, make_celery, send_sync

    redis_client.delete("celery")
    send_sync(make_celery(pg_settings), 41, "webhook", None, skip_if_running=True)
    raw = redis_client.lpop("celery")
    assert raw is not None
    message = json.loads(raw)
    headers = message["headers"]
    assert headers["task"] == TASK_SYNC
    assert headers["argsrepr"] == "[41, 'webhook', None]"
    assert headers["kwargsrepr"] == "{'reconcile': False, 'skip_if_running': True}"
    import base64

    args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
    assert args == [41, "webhook", None]
    assert kwargs == {"reconcile": False, "skip_if_running": True}
