"""Delivery of the outbox (service.infra.outbox) to INTEGRATOR_WEBHOOK_URL: signed webhooks,
at least once, in order per connection.

One deliverer at a time (a lock with a TTL and a heartbeat, so a dead worker frees it): it takes
the oldest undelivered event of each connection (the head), posts the heads that are due in
parallel, records every attempt, and goes round again while there is work. A connection's later
event is never posted before its head was delivered or given up; a failing head waits for its
next attempt (exponential backoff with jitter) while other connections proceed. After the retry
window (INTEGRATOR_WEBHOOK_RETRY_SECONDS from the first attempt) the head is marked failed and
the next one proceeds. A worker killed mid-post leaves the event undelivered: it is posted again
(at least once); the receiver deduplicates by the event `id`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import requests
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from service.infra import locks, metrics, outbox
from service.infra.coordination import Heartbeat
from service.infra.db import utcnow
from service.infra.models import DeliveryState, Event, EventAttempt
from service.services import Services

log = logging.getLogger(__name__)

PARALLEL_CONNECTIONS = 8  # heads posted at once (one per connection)
HEADS_PER_ROUND = 200
MAX_BACKOFF_SECONDS = 3600.0
ERROR_LIMIT = 500
SIGNATURE_HEADER = "X-LinkSync-Signature"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The inbound webhooks' scheme (service.api.signatures.sign, which this layer may not
    import): hex HMAC-SHA256 of "<t>.<raw body>"."""
    return hmac.new(
        secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256
    ).hexdigest()


def event_body(event: Event) -> dict[str, Any]:
    """The JSON the integrator receives (webhook body and feed item)."""
    body: dict[str, Any] = {
        "id": event.uid,
        "sequence": event.id,
        "type": event.type,
        "created_at": event.created_at.isoformat().replace("+00:00", "Z"),
        "account_id": event.account_id,
    }
    if event.member_id is not None:
        body["member_id"] = event.member_id
    body["data"] = event.data
    return body


def backoff_seconds(attempts: int, base: float) -> float:
    """Exponential in the attempts made so far, capped, with jitter (half to the full delay),
    so a fleet of failures does not retry in lock step."""
    delay = min(MAX_BACKOFF_SECONDS, base * 2 ** max(attempts - 1, 0))
    return random.uniform(delay / 2, delay)  # noqa: S311 - jitter, not security


@dataclass
class AttemptResult:
    ok: bool
    status_code: int | None
    latency: float
    error: str | None


class WebhookSender:
    """Posts signed events to the integrator's endpoint (one session, a timeout, no redirects)."""

    def __init__(self, url: str, secret: str, timeout: float) -> None:
        self.url, self.secret, self.timeout = url, secret, timeout
        self.http = requests.Session()
        self.http.headers["User-Agent"] = "LinkSync-Events/1"

    def post(self, body: dict[str, Any]) -> AttemptResult:
        raw = json.dumps(body, separators=(",", ":")).encode()
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: f"t={timestamp},v1={sign(self.secret, timestamp, raw)}",
            "X-LinkSync-Event-Id": str(body["id"]),
            "X-LinkSync-Event-Type": str(body["type"]),
        }
        started = time.monotonic()
        try:
            response = self.http.post(
                self.url, data=raw, headers=headers, timeout=self.timeout, allow_redirects=False
            )
        except requests.RequestException as exc:
            return AttemptResult(False, None, time.monotonic() - started, _describe(exc))
        latency = time.monotonic() - started
        response.close()
        if 200 <= response.status_code < 300:
            return AttemptResult(True, response.status_code, latency, None)
        return AttemptResult(False, response.status_code, latency, f"HTTP {response.status_code}")

    def close(self) -> None:
        self.http.close()


def _describe(exc: Exception) -> str:
    kind = "timeout" if isinstance(exc, requests.Timeout) else type(exc).__name__
    return f"{kind}: {exc}"[:ERROR_LIMIT]


@dataclass
class DeliveryReport:
    delivered: int = 0
    failed: int = 0
    gave_up: int = 0
    busy: bool = False  # another deliverer holds the lock
    next_due: datetime | None = None  # the earliest pending head's next attempt


def _due_heads(session: Session, now: datetime) -> list[Event]:
    heads = (
        select(func.min(Event.id))
        .where(Event.delivery_state == DeliveryState.PENDING)
        .group_by(Event.connection_id)
    )
    return list(
        session.scalars(
            select(Event)
            .where(
                Event.id.in_(heads),
                or_(Event.next_attempt_at.is_(None), Event.next_attempt_at <= now),
            )
            .order_by(Event.id)
            .limit(HEADS_PER_ROUND)
        )
    )


def _next_due(session: Session) -> datetime | None:
    heads = (
        select(func.min(Event.id))
        .where(Event.delivery_state == DeliveryState.PENDING)
        .group_by(Event.connection_id)
    )
    first = session.scalar(
        select(func.min(func.coalesce(Event.next_attempt_at, Event.created_at))).where(
            Event.id.in_(heads)
        )
    )
    if first is not None and first.tzinfo is None:  # SQLite returns aggregates naive
        from datetime import UTC

        first = first.replace(tzinfo=UTC)
    return first


def backlog(session: Session) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(Event)
            .where(Event.delivery_state == DeliveryState.PENDING)
        )
        or 0
    )


class Deliverer:
    def __init__(self, svc: Services) -> None:
        s = svc.settings
        self.svc = svc
        self.backoff_base = s.INTEGRATOR_WEBHOOK_BACKOFF_SECONDS
        self.window = timedelta(seconds=s.INTEGRATOR_WEBHOOK_RETRY_SECONDS)
        self.sender = WebhookSender(
            s.INTEGRATOR_WEBHOOK_URL or "",
            s.INTEGRATOR_WEBHOOK_SECRET or "",
            s.INTEGRATOR_WEBHOOK_TIMEOUT_SECONDS,
        )

    def attempt(self, event_id: int, report: DeliveryReport) -> None:
        with self.svc.db.session() as session:
            event = session.get(Event, event_id)
            if event is None or event.delivery_state != DeliveryState.PENDING:
                return
            body = event_body(event)
        result = self.sender.post(body)  # no transaction held while the endpoint answers
        metrics.EVENT_DELIVERY_SECONDS.observe(result.latency)
        now = utcnow()
        with self.svc.db.session() as session:
            event = session.get(Event, event_id)
            if event is None:
                return
            event.attempts += 1
            event.give_up_at = event.give_up_at or now + self.window
            if result.ok:
                outcome = "delivered"
                event.delivery_state = DeliveryState.DELIVERED
                event.delivered_at = now
                event.next_attempt_at = None
                event.last_error = None
                report.delivered += 1
            else:
                retry_at = now + timedelta(
                    seconds=backoff_seconds(event.attempts, self.backoff_base)
                )
                event.last_error = result.error
                if retry_at > event.give_up_at:
                    outcome = "gave_up"
                    event.delivery_state = DeliveryState.FAILED
                    event.next_attempt_at = None
                    report.gave_up += 1
                else:
                    outcome = "failed"
                    event.next_attempt_at = retry_at
                    report.failed += 1
            session.add(
                EventAttempt(
                    event_id=event_id,
                    attempted_at=now,
                    outcome=outcome,
                    status_code=result.status_code,
                    latency_ms=round(result.latency * 1000),
                    error=result.error,
                )
            )
        metrics.EVENT_DELIVERY_ATTEMPTS.labels(outcome).inc()
        if outcome != "delivered":
            log.warning(
                "event delivery failed",
                extra={"event_id": event_id, "outcome": outcome, "error": result.error},
            )

    def close(self) -> None:
        self.sender.close()


def deliver_due(svc: Services, *, on_round: Callable[[], None] | None = None) -> DeliveryReport:
    """Deliver every event that is due, in order per connection, until nothing is due.
    Returns at once (busy) when another deliverer runs: it is flagged to go round again."""
    report = DeliveryReport()
    if not svc.settings.INTEGRATOR_WEBHOOK_URL:
        metrics.EVENT_BACKLOG.set(0)
        return report  # events are only kept for the feed
    coordinator = svc.coordinator
    ttl = locks.sync_lock_ttl(svc.settings)
    token = coordinator.try_acquire(locks.EVENTS_DELIVERY_LOCK, ttl)
    if token is None:
        coordinator.set_flag(locks.EVENTS_DIRTY_FLAG, locks.dirty_ttl(svc.settings))
        report.busy = True
        return report
    deliverer = Deliverer(svc)
    try:
        with (
            Heartbeat(coordinator, locks.EVENTS_DELIVERY_LOCK, token, ttl) as heartbeat,
            ThreadPoolExecutor(PARALLEL_CONNECTIONS, thread_name_prefix="events") as pool,
        ):
            while not heartbeat.lost.is_set():
                coordinator.pop_flag(locks.EVENTS_DIRTY_FLAG)
                with svc.db.session() as session:
                    heads = [event.id for event in _due_heads(session, utcnow())]
                if not heads:
                    if coordinator.pop_flag(locks.EVENTS_DIRTY_FLAG):
                        continue
                    break
                list(pool.map(lambda event_id: deliverer.attempt(event_id, report), heads))
                if on_round:
                    on_round()
    finally:
        deliverer.close()
        coordinator.release(locks.EVENTS_DELIVERY_LOCK, token)
    with svc.db.session() as session:
        report.next_due = _next_due(session)
        metrics.EVENT_BACKLOG.set(backlog(session))
    return report


def redeliver(session: Session, event_id: int) -> Event | None:
    """Queue an event again (delivered or failed), with a fresh retry window; the caller
    commits, which wakes the deliverer. In order: it becomes its connection's head."""
    event = session.get(Event, event_id)
    if event is None:
        return None
    event.delivery_state = DeliveryState.PENDING
    event.next_attempt_at = None
    event.give_up_at = None
    event.delivered_at = None
    session.info[outbox.WAKE_FLAG] = True
    return event
