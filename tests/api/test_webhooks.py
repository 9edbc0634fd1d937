"""POST /webhooks/source: every accepted and rejected case, on SQLite and PostgreSQL + Redis.
A rejected webhook enqueues nothing and stores no delivery."""

from __future__ import annotations

import io
import json
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from service.api.signatures import sign
from service.app import create_app
from service.infra import locks
from service.infra.db import utcnow
from service.infra.models import Connection, ConnectionStatus, WebhookDelivery
from service.services import Services
from service.sync.runner import claim_run
from service.sync.scheduler import pending_requests
from tests.conftest import WEBHOOK_SECRET, RecordingEnqueue, new_account


@pytest.fixture
def client(services: Services) -> FlaskClient:
    return create_app(services.settings, services=services).test_client()


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


def signature(body: bytes, at: float | None = None, secret: str = WEBHOOK_SECRET) -> str:
    t = int(at if at is not None else time.time())
    return f"t={t},v1={sign(secret, t, body)}"


def post(
    client: FlaskClient,
    body: bytes,
    *,
    at: float | None = None,
    secret: str = WEBHOOK_SECRET,
    content_type: str = "application/json",
    header: str | None = None,
) -> Any:
    value = header if header is not None else signature(body, at, secret)
    headers = {"X-LinkSync-Signature": value} if value else {}
    return client.post("/webhooks/source", data=body, headers=headers, content_type=content_type)


def deliveries(svc: Services, account: str | None = None) -> int:
    query = select(func.count()).select_from(WebhookDelivery)
    if account is not None:
        query = query.where(WebhookDelivery.account_id == account)
    with svc.db.session() as session:
        return session.scalar(query) or 0


def outcome_count(outcome: str) -> float:
    value = REGISTRY.get_sample_value("linksync_webhook_deliveries_total", {"outcome": outcome})
    return value or 0.0


# Accepted -------------------------------------------------------------------------------


def test_valid_webhook_is_accepted_at_once_and_enqueues_one_sync(
    client: FlaskClient, services: Services, enqueued: RecordingEnqueue
) -> None:
    account, cid = add_connection(services)
    before = outcome_count("accepted")
    response = post(client, body_for(account))
    assert response.status_code == 202 and response.json == {"status": "accepted"}
    assert enqueued.calls == [(cid, "webhook", None)]
    assert deliveries(services, account) == 1
    assert outcome_count("accepted") == before + 1


def test_the_enqueue_happens_after_the_delivery_is_committed(
    services: Services, enqueued: RecordingEnqueue
) -> None:
    account, _ = add_connection(services)
    seen: list[int] = []

    def enqueue(connection_id: int, trigger: str, run_id: int | None) -> None:
        seen.append(deliveries(services, account))  # read from another connection
        enqueued(connection_id, trigger, run_id)

    client = create_app(services.settings, services=services, enqueue=enqueue).test_client()
    assert post(client, body_for(account)).status_code == 202
    assert seen == [1]


def test_a_burst_of_fifty_enqueues_at_most_two(
    client: FlaskClient, services: Services, enqueued: RecordingEnqueue
) -> None:
    account, cid = add_connection(services)
    statuses = [post(client, body_for(account)).status_code for _ in range(50)]
    assert statuses == [202] * 50
    assert 1 <= len(enqueued.calls) <= 2
    assert {call[0] for call in enqueued.calls} == {cid}
    assert deliveries(services, account) == 50


def test_bursts_for_two_accounts_enqueue_each(
    client: FlaskClient, services: Services, enqueued: RecordingEnqueue
) -> None:
    (a, aid), (b, bid) = add_connection(services), add_connection(services)
    for _ in range(10):
        assert post(client, body_for(a)).status_code == 202
        assert post(client, body_for(b)).status_code == 202
    assert {call[0] for call in enqueued.calls} == {aid, bid}
    assert len(enqueued.calls) <= 4


def test_repeated_event_id_is_accepted_and_ignored(
    client: FlaskClient, services: Services, enqueued: RecordingEnqueue
) -> None:
    account, _ = add_connection(services)
    body = body_for(account, id="evt-repeat-" + uuid.uuid4().hex)
    assert post(client, body).status_code == 202
    services.coordinator.pop_flag(f"pending:{enqueued.calls[0][0]}")  # as a started worker does
    again = post(client, body)
    assert again.status_code == 202 and again.json == {"status": "duplicate"}
    assert len(enqueued.calls) == 1
    assert deliveries(services, account) == 1


def test_concurrent_copies_of_one_event_are_accepted_once(
    services: Services, enqueued: RecordingEnqueue
) -> None:
    app = create_app(services.settings, services=services)
    account, _ = add_connection(services)
    body = body_for(account)
    statuses: list[str] = []
    start = threading.Barrier(6)

    def deliver() -> None:
        start.wait()
        response = post(app.test_client(), body)
        statuses.append(response.json["status"])

    threads = [threading.Thread(target=deliver) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(statuses) == ["accepted"] + ["duplicate"] * 5
    assert len(enqueued.calls) == 1 and deliveries(services, account) == 1


def test_timestamps_within_five_minutes_either_way_are_accepted(
    client: FlaskClient, services: Services
) -> None:
    account, _ = add_connection(services)
    assert post(client, body_for(account), at=time.time() - 280).status_code == 202
    assert post(client, body_for(account), at=time.time() + 280).status_code == 202


def test_one_matching_signature_of_several_is_enough_for_secret_rotation(
    client: FlaskClient, services: Services
) -> None:
    account, _ = add_connection(services)
    body = body_for(account)
    t = int(time.time())
    header = f"t={t},v1={sign('the-old-secret', t, body)},v1={sign(WEBHOOK_SECRET, t, body)}"
    assert post(client, body, header=header).status_code == 202


def test_unknown_fields_in_the_event_are_ignored(client: FlaskClient, services: Services) -> None:
    account, _ = add_connection(services)
    response = post(client, body_for(account, created_at="2024-01-01T00:00:00Z", extra={"a": 1}))
    assert response.status_code == 202


# Rejected: nothing enqueued, nothing stored ----------------------------------------------

CASES: dict[str, tuple[int, Callable[[FlaskClient, Services, str], Any]]] = {
    "no_header": (401, lambda c, s, a: post(c, body_for(a), header="")),
    "forged": (
        401,
        lambda c, s, a: post(c, body_for(a), header=f"t={int(time.time())},v1={'0' * 64}"),
    ),
    "wrong_secret": (401, lambda c, s, a: post(c, body_for(a), secret="not-the-secret")),
    "garbage_header": (
        401,
        lambda c, s, a: post(c, body_for(a), header="<script>alert(1)</script>"),
    ),
    "no_timestamp": (401, lambda c, s, a: post(c, body_for(a), header=f"v1={'a' * 64}")),
    "signature_of_another_body": (
        401,
        lambda c, s, a: post(c, body_for(a), header=signature(body_for(a))),
    ),
    "stale_6_minutes": (401, lambda c, s, a: post(c, body_for(a), at=time.time() - 360)),
    "future_6_minutes": (401, lambda c, s, a: post(c, body_for(a), at=time.time() + 360)),
    "bad_signature_before_bad_json": (401, lambda c, s, a: post(c, b"{not json", secret="x")),
    "bad_signature_before_unknown_account": (
        401,
        lambda c, s, a: post(c, body_for("nobody-" + uuid.uuid4().hex), secret="x"),
    ),
    "wrong_content_type": (415, lambda c, s, a: post(c, body_for(a), content_type="text/plain")),
    "form_content_type": (
        415,
        lambda c, s, a: post(c, body_for(a), content_type="application/x-www-form-urlencoded"),
    ),
    "malformed_json": (400, lambda c, s, a: post(c, b"{not json")),
    "empty_body": (400, lambda c, s, a: post(c, b"")),
    "not_an_object": (400, lambda c, s, a: post(c, b"[1, 2]")),
    "missing_id": (
        400,
        lambda c, s, a: post(
            c, json.dumps({"type": "event_types.changed", "account_id": a}).encode()
        ),
    ),
    "empty_id": (400, lambda c, s, a: post(c, body_for(a, id=""))),
    "numeric_id": (400, lambda c, s, a: post(c, body_for(a, id=12345))),
    "long_id": (400, lambda c, s, a: post(c, body_for(a, id="x" * 256))),
    "unknown_type": (400, lambda c, s, a: post(c, body_for(a, type="event_types.exploded"))),
    "missing_account": (
        400,
        lambda c, s, a: post(c, json.dumps({"id": "1", "type": "event_types.changed"}).encode()),
    ),
    "path_traversal_account": (400, lambda c, s, a: post(c, body_for("../../etc/passwd"))),
    "dot_dot_account": (400, lambda c, s, a: post(c, body_for(".."))),
    "unknown_account": (404, lambda c, s, a: post(c, body_for("no-such-" + uuid.uuid4().hex))),
    "oversized": (
        413,
        lambda c, s, a: post(c, body_for(a, pad="x" * (s.settings.WEBHOOK_MAX_BODY_BYTES + 10))),
    ),
}

FIELDS = {
    "missing_id": "id",
    "empty_id": "id",
    "numeric_id": "id",
    "long_id": "id",
    "unknown_type": "type",
    "missing_account": "account_id",
    "path_traversal_account": "account_id",
    "dot_dot_account": "account_id",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_rejected_webhooks_enqueue_nothing_and_store_nothing(
    client: FlaskClient, services: Services, enqueued: RecordingEnqueue, case: str
) -> None:
    status, send = CASES[case]
    account, _ = add_connection(services)
    before = deliveries(services)
    response = send(client, services, account)
    assert response.status_code == status
    assert response.is_json and set(response.json["error"]) >= {"code", "message"}
    if case in FIELDS:
        assert response.json["error"]["field"] == FIELDS[case]
    if case == "unknown_type":
        assert "event_types.changed" in response.json["error"]["message"]
    assert enqueued.calls == []
    assert deliveries(services) == before


def test_a_body_over_the_limit_without_content_length_is_413(
    make_settings: Any, services: Services, enqueued: RecordingEnqueue
) -> None:
    settings = make_settings(
        WEBHOOK_MAX_BODY_BYTES=2048,
        DATABASE_URL=services.settings.DATABASE_URL,
        REDIS_URL=services.settings.REDIS_URL,
    )
    client = create_app(settings, services=Services(settings, enqueue=enqueued)).test_client()
    account, _ = add_connection(services)
    body = body_for(account, pad="x" * 3000)
    response = client.post(
        "/webhooks/source",
        input_stream=io.BytesIO(body),  # streamed: the length is known only by reading
        headers={"X-LinkSync-Signature": signature(body), "Content-Type": "application/json"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 413 and response.json["error"]["code"] == "payload_too_large"
    assert enqueued.calls == [] and deliveries(services, account) == 0
    small = body_for(account)
    response = client.post(
        "/webhooks/source",
        input_stream=io.BytesIO(small),
        headers={"X-LinkSync-Signature": signature(small), "Content-Type": "application/json"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 202


def test_other_methods_are_405_naming_post(client: FlaskClient) -> None:
    response = client.get("/webhooks/source")
    assert response.status_code == 405 and response.headers["Allow"] == "POST"
    assert response.json["error"]["code"] == "method_not_allowed"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    "status",
    [ConnectionStatus.NEEDS_REAUTH, ConnectionStatus.PAUSED, ConnectionStatus.DISCONNECTED],
)
def test_inactive_connection_is_a_conflict_naming_the_status(
    client: FlaskClient, services: Services, enqueued: RecordingEnqueue, status: str
) -> None:
    account, _ = add_connection(services, status)
    response = post(client, body_for(account))
    assert response.status_code == 409 and status in response.json["error"]["message"]
    assert enqueued.calls == [] and deliveries(services, account) == 0


def test_rejections_are_counted_by_outcome(client: FlaskClient, services: Services) -> None:
    account, _ = add_connection(services)
    before = {o: outcome_count(o) for o in ("unauthorized", "bad_request", "unknown_account")}
    post(client, body_for(account), secret="wrong")
    post(client, b"{")
    post(client, body_for("no-such-" + uuid.uuid4().hex))
    for outcome, value in before.items():
        assert outcome_count(outcome) == value + 1, outcome


def test_without_a_secret_every_webhook_is_refused(
    client: FlaskClient, services: Services, enqueued: RecordingEnqueue
) -> None:
    account, _ = add_connection(services)
    services.settings.WEBHOOK_SECRET = None
    response = post(client, body_for(account), secret="")
    assert response.status_code == 401 and "WEBHOOK_SECRET" in response.json["error"]["message"]
    assert enqueued.calls == [] and deliveries(services, account) == 0


# Flood and failure ----------------------------------------------------------------------


def test_flood_of_one_account_is_rate_limited_with_retry_after(
    services: Services, enqueued: RecordingEnqueue
) -> None:
    services.settings.WEBHOOK_RATE_LIMIT_PER_MINUTE = 5
    client = create_app(services.settings, services=services).test_client()
    account, _ = add_connection(services)
    other, _ = add_connection(services)
    statuses = [post(client, body_for(account)).status_code for _ in range(8)]
    assert statuses == [202] * 5 + [429] * 3
    limited = post(client, body_for(account))
    assert limited.status_code == 429 and limited.json["error"]["code"] == "rate_limited"
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert deliveries(services, account) == 5  # the refused ones stored nothing
    assert len(enqueued.calls) == 1
    # Other accounts are not affected.
    assert post(client, body_for(other)).status_code == 202


def test_the_flood_limit_is_shared_by_every_process_on_the_database(
    services: Services, enqueued: RecordingEnqueue
) -> None:
    """The limit counts the account's delivery rows of the last minute, so two web processes
    (here two apps with their own Services on one database) share it exactly."""
    services.settings.WEBHOOK_RATE_LIMIT_PER_MINUTE = 4
    second = Services(services.settings, enqueue=enqueued)
    try:
        clients = [
            create_app(services.settings, services=services).test_client(),
            create_app(services.settings, services=second).test_client(),
        ]
        account, _ = add_connection(services)
        statuses = [post(clients[n % 2], body_for(account)).status_code for n in range(6)]
        assert statuses == [202] * 4 + [429] * 2
        assert deliveries(services, account) == 4
    finally:
        second.close()


def test_the_flood_window_slides_a_refused_account_gets_in_once_its_oldest_delivery_ages(
    services: Services, enqueued: RecordingEnqueue
) -> None:
    """Retry-After names when the oldest delivery that counts leaves the minute: here the
    first two were received 50 s ago, so they leave in about 10 s, and once they have left
    the account is accepted again."""

    from sqlalchemy import update

    services.settings.WEBHOOK_RATE_LIMIT_PER_MINUTE = 3
    client = create_app(services.settings, services=services).test_client()
    account, _ = add_connection(services)
    assert [post(client, body_for(account)).status_code for _ in range(3)] == [202] * 3
    with services.db.session() as session:
        first_two = session.scalars(
            select(WebhookDelivery.id)
            .where(WebhookDelivery.account_id == account)
            .order_by(WebhookDelivery.id)
            .limit(2)
        ).all()
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id.in_(first_two))
            .values(received_at=utcnow() - timedelta(seconds=50))
        )
    limited = post(client, body_for(account))
    assert limited.status_code == 429
    # The limit-th newest of the window is the second, received ~50 s ago: it leaves in ~10 s.
    assert 9 <= int(limited.headers["Retry-After"]) <= 11
    with services.db.session() as session:
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id.in_(first_two))
            .values(received_at=utcnow() - timedelta(seconds=61))
        )
    assert post(client, body_for(account)).status_code == 202


def test_a_broker_outage_still_accepts_the_webhook_and_records_the_request(
    services: Services, enqueued: RecordingEnqueue
) -> None:
    """Durable before acknowledged: the delivery and the sync request commit together, so a
    broker that refuses the wake-up does not fail the delivery (the scheduler re-sends it)."""
    account, cid = add_connection(services)
    before = outcome_count("accepted")

    def enqueue(connection_id: int, trigger: str, run_id: int | None) -> None:
        raise ConnectionError("broker down")

    client = create_app(services.settings, services=services, enqueue=enqueue).test_client()
    body = body_for(account)
    response = post(client, body)
    assert response.status_code == 202 and response.json == {"status": "accepted"}
    assert deliveries(services, account) == 1
    with services.db.session() as session:
        connection = session.get(Connection, cid)
        assert connection is not None
        assert connection.sync_requested_at is not None
        assert connection.sync_requested_trigger == "webhook"
    assert outcome_count("accepted") == before + 1
    retry = post(client, body)  # the integrator delivers the same event again
    assert retry.status_code == 202 and retry.json == {"status": "duplicate"}
    # The request is pending: a later delivery adds nothing to it and publishes nothing; the
    # scheduler's sweep re-sends the lost wake-up once the request is older than its grace.
    services.enqueue = enqueued  # the broker is back
    assert post(client, body_for(account)).status_code == 202
    assert enqueued.calls == []
    later = utcnow() + timedelta(seconds=locks.PENDING_REQUEST_GRACE + 1)
    assert [p.connection_id for p in pending_requests(services, later)] == [cid]


def test_a_delivery_wakes_only_the_connections_whose_request_it_created(
    client: FlaskClient, services: Services, enqueued: RecordingEnqueue
) -> None:
    """No flag in Redis decides it: the connection row does. A request already pending is
    claimed by a run that reads the source after this delivery (nothing to publish); once a
    run claimed it, the next delivery creates a new one and wakes a worker; a request a
    failed run put off into the future is brought forward and woken."""
    from sqlalchemy import update

    account, cid = add_connection(services)
    assert post(client, body_for(account)).status_code == 202
    assert post(client, body_for(account)).status_code == 202
    assert enqueued.calls == [(cid, "webhook", None)]
    claim = claim_run(services, cid, "webhook", None)  # a worker starts: the request is its
    assert claim is not None and claim.requested_at is not None
    assert post(client, body_for(account)).status_code == 202
    assert enqueued.calls == [(cid, "webhook", None)] * 2
    assert claim_run(services, cid, "webhook", None) is not None
    put_off = utcnow() + timedelta(minutes=5)
    with services.db.session() as session:
        session.execute(
            update(Connection).where(Connection.id == cid).values(sync_requested_at=put_off)
        )
    assert post(client, body_for(account)).status_code == 202
    assert enqueued.calls == [(cid, "webhook", None)] * 3
    with services.db.session() as session:
        requested = session.get(Connection, cid)
        assert requested is not None and requested.sync_requested_at is not None
        assert requested.sync_requested_at < put_off


def test_members_changed_resyncs_every_connection_of_the_account(
    client: FlaskClient, services: Services, enqueued: RecordingEnqueue
) -> None:
    account, admin = add_connection(services)
    with services.db.session() as session:
        members = [Connection(account_id=account, member_id=m) for m in ("m_bob", "m_carol")]
        gone = Connection(account_id=account, member_id="m_dave", status="needs_reauth")
        session.add_all([*members, gone])
        session.flush()
        member_ids = [m.id for m in members]
    response = post(client, body_for(account, type="members.changed"))
    assert response.status_code == 202
    assert sorted(enqueued.calls) == sorted((cid, "webhook", None) for cid in [admin, *member_ids])
    # A burst is coalesced per connection: nothing more while those wait to start.
    assert post(client, body_for(account, type="event_types.changed")).status_code == 202
    assert len(enqueued.calls) == 3


@pytest.mark.postgres
@pytest.mark.redis
def test_a_burst_while_a_sync_is_pending_costs_one_round_trip_each_and_no_redis(
    pg_settings: Any, enqueued: RecordingEnqueue, redis_client: Any, tmp_path: Any
) -> None:
    """On PostgreSQL a delivery is one round trip: one prepared statement, autocommitted (no
    BEGIN, no COMMIT, no pre-ping, no reset), read off the wire with libpq's trace of the hot
    pool's connections; and no Redis command at all (MONITOR, commands of our db; a probe
    shows the monitor sees them). Once a sync is queued the burst publishes nothing."""
    from sqlalchemy import event

    services = Services(pg_settings, enqueue=enqueued)
    trace = open(tmp_path / "libpq.trace", "w")  # noqa: SIM115 - closed below
    try:
        event.listen(
            services.db.autocommit,
            "connect",
            lambda dbapi, _record: dbapi.pgconn.trace(trace.fileno()),
        )
        client = create_app(services.settings, services=services).test_client()
        account, cid = add_connection(services)
        assert post(client, body_for(account)).status_code == 202  # prepares the statement
        db = redis_client.connection_pool.connection_kwargs.get("db", 0)
        seen: list[str] = []
        ready = threading.Event()

        def watch() -> None:
            with redis_client.monitor() as monitor:
                ready.set()
                for command in monitor.listen():
                    if "STOP-MONITOR" in command["command"]:
                        return
                    if command.get("db") == db and "linksync:" in command["command"]:
                        seen.append(command["command"])

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        assert ready.wait(5)
        time.sleep(0.2)
        trace.flush()
        start = (tmp_path / "libpq.trace").stat().st_size
        for _ in range(10):
            assert post(client, body_for(account)).status_code == 202
        redis_client.get("linksync:probe")
        redis_client.echo("STOP-MONITOR")
        watcher.join(5)
        trace.flush()
        sent = [
            line.split("\t")[3].split(" ")[0]
            for line in (tmp_path / "libpq.trace").read_text()[start:].splitlines()
            if line.split("\t")[1] == "F"
        ]
        assert sent == ["Bind", "Describe", "Execute", "Sync"] * 10, sent
        assert deliveries(services, account) == 11
        assert enqueued.calls == [(cid, "webhook", None)]
        assert seen == ["GET linksync:probe"], seen
    finally:
        trace.close()
        services.close()


@pytest.mark.postgres
def test_a_dead_pooled_connection_costs_the_delivery_nothing(
    pg_settings: Any, enqueued: RecordingEnqueue
) -> None:
    """The hot path has no pre-ping: when its pooled connection was terminated (a database
    restart, a failover), the statement is retried once on a fresh connection: 202, not 503."""
    from sqlalchemy import text

    services = Services(pg_settings, enqueue=enqueued)
    try:
        client = create_app(services.settings, services=services).test_client()
        account, _ = add_connection(services)
        assert post(client, body_for(account)).status_code == 202
        with services.db.autocommit.connect() as conn:  # the one pooled connection
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        with services.db.engine.connect() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
        response = post(client, body_for(account))
        assert response.status_code == 202 and response.json == {"status": "accepted"}
        assert deliveries(services, account) == 2
    finally:
        services.close()


@pytest.mark.postgres
def test_the_hot_path_reports_a_database_error_by_its_sqlstate(pg_settings: Any) -> None:
    """The statement runs on psycopg's libpq binding: an error comes back as psycopg's
    exception for its SQLSTATE, and a dead connection as an OperationalError."""
    import psycopg
    from psycopg import errors

    from service.api.webhooks import _check

    with psycopg.connect(pg_settings.database_url.replace("+psycopg", "")) as conn:
        pgconn = conn.pgconn
        with pytest.raises(errors.UndefinedTable):
            _check(pgconn, pgconn.exec_(b"SELECT * FROM no_such_table"))
        assert _check(pgconn, pgconn.exec_(b"SELECT 1")).ntuples == 1
        pid = int(_check(pgconn, pgconn.exec_(b"SELECT pg_backend_pid()")).get_value(0, 0) or 0)
        with psycopg.connect(
            pg_settings.database_url.replace("+psycopg", ""), autocommit=True
        ) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(psycopg.OperationalError):
            _check(pgconn, pgconn.exec_(b"SELECT 1"))
