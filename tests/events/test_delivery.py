"""Delivery to a real HTTP receiver: retries with backoff, order per connection, give-up, the
signature checked by an implementation written here from the spec, and the feed's cursor."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import time
from typing import Any

from prometheus_client import REGISTRY
from sqlalchemy import select

from service.app import create_app
from service.events.delivery import deliver_due
from service.infra import outbox
from service.infra.models import Connection, DeliveryState, Event, EventAttempt
from service.services import Services
from tests.conftest import API_KEY, new_account, wait_until
from tests.events.conftest import INTEGRATOR_SECRET
from tests.events.receiver import Receiver
from tests.helpers import connect_directly


def emit(svc: Services, connection_id: int, n: int) -> list[str]:
    uids = []
    for i in range(n):
        with svc.db.session() as session:
            connection = session.get(Connection, connection_id)
            assert connection is not None
            connection.status_reason = f"reason {i}"
            uids.append(
                outbox.record_status(session, connection, outbox.EventType.CONNECTION_PAUSED).uid
            )
    return uids


def deliver_until_done(svc: Services, timeout: float = 20.0) -> None:
    def done() -> bool:
        deliver_due(svc)
        with svc.db.session() as session:
            pending = session.scalars(
                select(Event).where(Event.delivery_state == DeliveryState.PENDING)
            ).all()
            return not pending

    wait_until(done, timeout=timeout, interval=0.05)


def independent_verify(secret: str, header: str, body: bytes) -> bool:
    """X-LinkSync-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">, from scratch."""
    parts = dict(item.split("=", 1) for item in header.split(","))
    mac = hmac.new(secret.encode(), parts["t"].encode() + b"." + body, hashlib.sha256)
    return (
        hmac.compare_digest(mac.hexdigest(), parts["v1"])
        and abs(time.time() - int(parts["t"])) < 300
    )


def attempts_counted(outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "linksync_event_delivery_attempts_total", {"outcome": outcome}
    )
    return value or 0.0


def latency_observations() -> float:
    return REGISTRY.get_sample_value("linksync_event_delivery_seconds_count") or 0.0


def test_flaky_receiver_gets_every_event_once_delivered_in_order_signed(
    event_services: Services, sandbox: Any, receiver: tuple[Receiver, str]
) -> None:
    recv, _url = receiver
    a = connect_directly(event_services, sandbox, new_account())
    b = connect_directly(event_services, sandbox, new_account())
    recv.script = [500, 503, 500]  # the first three posts fail, whichever they are
    a_uids = emit(event_services, a, 3)
    b_uids = emit(event_services, b, 2)
    before = {outcome: attempts_counted(outcome) for outcome in ("delivered", "failed")}
    timed = latency_observations()
    deliver_until_done(event_services)
    # Every attempt is counted for Prometheus, by outcome, with its latency; nothing is left.
    assert attempts_counted("delivered") - before["delivered"] == 5
    assert attempts_counted("failed") - before["failed"] == 3
    assert latency_observations() - timed == 8
    assert REGISTRY.get_sample_value("linksync_event_backlog") == 0

    delivered = recv.delivered()
    by_account: dict[str, list[str]] = {}
    for body in delivered:
        by_account.setdefault(body["account_id"], []).append(body["id"])
    # Every event arrived, each connection's in order, despite the failures.
    assert sorted(by_account.values(), key=len) == [b_uids, a_uids]
    assert len(delivered) == 5
    for received in recv.received:
        assert independent_verify(
            INTEGRATOR_SECRET, received.headers["X-Linksync-Signature"], received.body
        )
        assert set(received.json) >= {"id", "type", "created_at", "account_id", "data"}
    # No connection's later event was ever posted before its earlier one succeeded.
    for uids in (a_uids, b_uids):
        posts = [r.json["id"] for r in recv.received if r.json["id"] in uids]
        first_success = {
            r.json["id"]: i
            for i, r in enumerate(x for x in recv.received if x.json["id"] in uids)
            if r.status == 200
        }
        for earlier, later in itertools.pairwise(uids):
            assert posts.index(later) > first_success[earlier]
    with event_services.db.session() as session:
        attempts = session.scalars(select(EventAttempt).order_by(EventAttempt.id)).all()
        assert [a.outcome for a in attempts].count("failed") == 3
        assert {a.status_code for a in attempts} == {200, 500, 503}
        assert all(a.latency_ms is not None for a in attempts)


def test_after_the_retry_window_an_event_is_failed_and_the_next_proceeds(
    make_settings: Any, sandbox: Any, receiver: tuple[Receiver, str]
) -> None:
    from service.infra import migrate
    from tests.conftest import RecordingEnqueue

    recv, url = receiver
    settings = make_settings(
        INTEGRATOR_WEBHOOK_URL=url,
        INTEGRATOR_WEBHOOK_SECRET=INTEGRATOR_SECRET,
        INTEGRATOR_WEBHOOK_RETRY_SECONDS=0,
    )
    migrate.upgrade(settings.database_url)
    svc = Services(settings, enqueue=RecordingEnqueue(), wake_events=lambda: None)
    try:
        cid = connect_directly(svc, sandbox, new_account())
        recv.script = [500]
        first, second = emit(svc, cid, 2)
        deliver_until_done(svc)
        with svc.db.session() as session:
            states = {
                e.uid: (e.delivery_state, e.last_error) for e in session.scalars(select(Event))
            }
        assert states[first] == (DeliveryState.FAILED, "HTTP 500")
        assert states[second] == (DeliveryState.DELIVERED, None)
        assert [body["id"] for body in recv.delivered()] == [second]
    finally:
        svc.close()


def test_a_dead_endpoint_times_out_and_is_retried(
    event_services: Services, sandbox: Any, receiver: tuple[Receiver, str]
) -> None:
    recv, _url = receiver
    cid = connect_directly(event_services, sandbox, new_account())
    recv.delay = 2.5  # beyond the 2 s timeout
    (uid,) = emit(event_services, cid, 1)
    deliver_due(event_services)
    with event_services.db.session() as session:
        event = session.scalar(select(Event).where(Event.uid == uid))
        assert event is not None and event.delivery_state == DeliveryState.PENDING
        assert (event.last_error or "").startswith("timeout")
    recv.delay = 0
    deliver_until_done(event_services)
    assert uid in [body["id"] for body in recv.delivered()]


def test_the_feed_pages_oldest_first_with_a_cursor(event_services: Services, sandbox: Any) -> None:
    cid = connect_directly(event_services, sandbox, new_account())
    uids = emit(event_services, cid, 5)
    client = create_app(event_services.settings, services=event_services).test_client()
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with event_services.db.session() as session:
        start = min(e.id for e in session.scalars(select(Event).where(Event.uid.in_(uids))))
    seen: list[str] = []
    after = str(start - 1)
    for _ in range(4):
        page = client.get(f"/api/v1/events?after={after}&limit=2", headers=headers).get_json()
        seen += [item["id"] for item in page["data"]]
        if page["next"] == after:
            break
        after = page["next"]
    assert seen == uids
    assert page["data"] == [] and page["has_more"] is False
    # An event id works as a cursor too; a bad cursor is a 400 naming the parameter.
    page = client.get(f"/api/v1/events?after={uids[2]}", headers=headers).get_json()
    assert [item["id"] for item in page["data"]] == uids[3:]
    bad = client.get("/api/v1/events?after=evt_zz", headers=headers)
    assert bad.status_code == 400 and bad.get_json()["error"]["field"] == "after"
    assert client.get("/api/v1/events").status_code == 401
    document = client.get("/api/v1/openapi.json").get_json()
    assert "LinksErrorsChangedData" in document["components"]["schemas"]
    assert "CoverageChangedEvent" in document["components"]["schemas"]
