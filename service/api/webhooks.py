"""POST /webhooks/source: signed event-type change notifications from the integrator.

Order matters, cheapest and least trusting first: size and content type (before reading the
body), the signature (before parsing JSON or touching the database), the body, the
per-account flood limit (one Redis round trip, before any database work, which also asks
whether the account's coalesced sync is already waiting), then the connection
and de-duplication by event id (insert, unique constraint) committed with the durable sync
request of every connection of the account (on PostgreSQL one autocommitted statement, the
delivery's only database round trip), and only then a coalesced wake-up of a worker (no
publish while a wake-up is still waiting; it never fails the delivery: a broker outage only
delays the sync). Answers 202 at once; a worker syncs. A rejected delivery enqueues nothing
and stores nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Literal

from flask import Blueprint, Response, jsonify, request
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError

from service.api.openapi import Parameter
from service.api.routing import document, json_response, validation_failed
from service.api.schemas import WebhookIn, WebhookOut
from service.api.signatures import MAX_HEADER, SignatureError, verify
from service.connections.queries import account_connections
from service.errors import (
    Conflict,
    DomainError,
    NotFound,
    PayloadTooLarge,
    TooManyRequests,
    Unauthorized,
    UnsupportedMediaType,
    UpstreamUnavailable,
    ValidationFailed,
)
from service.infra import locks, metrics
from service.infra.coordination import RedisCoordinator
from service.infra.db import utcnow
from service.infra.models import ConnectionStatus, Trigger, WebhookDelivery
from service.services import Services
from service.sync.triggers import mark_requested, require_syncable, wake_coalesced
from service.web.context import db_session, services

log = logging.getLogger(__name__)

bp = Blueprint("api_webhooks", __name__)

SIGNATURE_HEADER = "X-LinkSync-Signature"
SUPPORTED_TYPES = ("event_types.changed", "members.changed")
WINDOW_SECONDS = 60

# Outcome label of linksync_webhook_deliveries_total for each way a delivery is refused.
OUTCOMES: dict[type[DomainError], str] = {
    PayloadTooLarge: "too_large",
    UnsupportedMediaType: "unsupported_media_type",
    Unauthorized: "unauthorized",
    ValidationFailed: "bad_request",
    TooManyRequests: "rate_limited",
    NotFound: "unknown_account",
    Conflict: "inactive",
    UpstreamUnavailable: "unavailable",
}


class RateLimited(TooManyRequests):
    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class FixedWindowCounter:
    """Per-key fixed-window counter inside one process (the embedded default, no Redis)."""

    def __init__(self, max_keys: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._window = -1
        self._counts: dict[str, int] = {}
        self._max_keys = max_keys

    def hit(self, key: str, window: int) -> int:
        with self._lock:
            if window != self._window:  # a new minute: forget the last one
                self._window, self._counts = window, {}
            if key not in self._counts and len(self._counts) >= self._max_keys:
                return 1  # bounded memory under a flood of distinct keys; Redis is exact
            self._counts[key] = self._counts.get(key, 0) + 1
            return self._counts[key]


_local_counter = FixedWindowCounter()


# account id -> its admin connection's id, as the last delivery found it: lets the flood
# counter's pipeline also ask whether that connection's coalesced sync is already waiting, so a
# burst costs one Redis round trip per delivery. Only a hint: the answer counts only when the
# database returns the same id (an account that reconnected gets a new one).
_admin_ids: dict[str, int] = {}
ADMIN_IDS_KEPT = 100_000


def check_rate(svc: Services, account_id: str, now: float) -> int | None:
    """Raise RateLimited when this account sent more than WEBHOOK_RATE_LIMIT_PER_MINUTE
    webhooks in the current minute (one pipelined Redis round trip, before any database
    work, so a refused delivery touches no database). Returns the admin connection id whose
    coalesced sync is already waiting (the pending flag of the id `_admin_ids` remembers),
    else None."""
    window = int(now // WINDOW_SECONDS)
    pending_for: int | None = None
    coordinator = svc.coordinator
    if svc.redis is not None and isinstance(coordinator, RedisCoordinator):
        key = locks.webhook_rate_key(account_id, window)
        known = _admin_ids.get(account_id)
        try:
            pipe = svc.redis.pipeline(transaction=False)
            pipe.incr(key)
            pipe.expire(key, 2 * WINDOW_SECONDS)
            if known is not None:
                pipe.exists(coordinator.prefix + locks.pending_flag(known))
            answers = pipe.execute()
            count = int(answers[0])
            if known is not None and answers[2]:
                pending_for = known
        except Exception:
            # Fail open: the limit protects us from floods, it is not correctness; a Redis
            # outage surfaces anyway when the sync is enqueued.
            log.warning("webhook rate counter unavailable; not limiting", exc_info=True)
            return None
    else:
        count = _local_counter.hit(account_id, window)
    if count > svc.settings.WEBHOOK_RATE_LIMIT_PER_MINUTE:
        retry_after = max(1, int(WINDOW_SECONDS - now % WINDOW_SECONDS))
        raise RateLimited(
            f"more than {svc.settings.WEBHOOK_RATE_LIMIT_PER_MINUTE} webhooks a minute for "
            "this account; retry later",
            retry_after=retry_after,
        )
    return pending_for


def parse_event(raw: bytes) -> WebhookIn:
    try:
        return WebhookIn.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["loc"] == ("type",) and first["type"] == "literal_error":
            raise ValidationFailed(
                f"type: unsupported event type; supported: {', '.join(SUPPORTED_TYPES)}",
                field="type",
            ) from None
        raise validation_failed(exc) from None


def read_body(limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"body larger than {limit} bytes")
    if request.mimetype != "application/json":
        raise UnsupportedMediaType("Content-Type must be application/json")
    # Read at most one byte past the limit, whatever Content-Length says (or if it is absent).
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = request.stream.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise PayloadTooLarge(f"body larger than {limit} bytes")
    return b"".join(chunks)


def ingest(svc: Services) -> Literal["accepted", "duplicate"]:
    """Accept one delivery; return "accepted" or "duplicate", or raise a DomainError."""
    settings = svc.settings
    raw = read_body(settings.WEBHOOK_MAX_BODY_BYTES)
    if not settings.WEBHOOK_SECRET:  # fail closed: an empty secret would sign for anyone
        raise Unauthorized("webhooks are not configured here (WEBHOOK_SECRET is unset)")
    now = time.time()
    try:
        verify(settings.WEBHOOK_SECRET, request.headers.get(SIGNATURE_HEADER), raw, now)
    except SignatureError as exc:
        raise Unauthorized(str(exc)) from None
    event = parse_event(raw)
    pending_for = check_rate(svc, event.account_id, now)
    # The delivery and the durable sync request of every syncable connection of the account
    # (the admin's, which also does the shared links, and each active member's) commit
    # together: once we answer 202 the sync is owed even if the broker is down right now
    # (the scheduler re-sends the wake-up).
    record = record_in_one_statement if svc.db.is_postgres else record_in_session
    owed = record(svc, event)
    if owed is None:  # this event id was delivered before
        return "duplicate"
    if len(_admin_ids) >= ADMIN_IDS_KEPT:
        _admin_ids.clear()
    _admin_ids[event.account_id] = owed[0]
    if owed == [pending_for]:
        # A queued sync of the admin connection (the only one) has not started yet: it reads
        # the source when it starts, after this delivery was recorded, so it covers this
        # change; no flag write, no broker publish.
        return "accepted"
    for connection_id in owed:
        # Coalesced: no publish while a wake-up for the connection is still waiting.
        wake_coalesced(svc, connection_id, str(Trigger.WEBHOOK))
    return "accepted"


def record_in_session(_svc: Services, event: WebhookIn) -> list[int] | None:
    """The delivery row and the sync requests through the ORM (SQLite): the connection ids
    owed a sync, or None for a repeated event id."""
    session = db_session()
    connection, member_rows = account_connections(session, event.account_id)
    require_syncable(connection)
    owed = [connection, *(c for c in member_rows if c.syncable)]
    session.add(
        WebhookDelivery(event_id=event.id, account_id=event.account_id, event_type=event.type)
    )
    for row in owed:
        mark_requested(row, Trigger.WEBHOOK)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        return None
    return [row.id for row in owed]


# PostgreSQL: the same in one autocommitted statement, so a delivery costs one database round
# trip. The delivery is inserted only when the admin connection is active; the requests are
# written only when the delivery was new (PostgreSQL runs a data-modifying WITH whether or not
# the query reads it). The SELECT sees the rows as they were before.
RECORD_DELIVERY = text(
    """
    WITH account AS (
        SELECT id, member_id, status FROM connections WHERE account_id = :account
    ), delivery AS (
        INSERT INTO webhook_deliveries (event_id, account_id, event_type, received_at)
        SELECT :event_id, :account, :event_type, :now
        WHERE EXISTS (
            SELECT 1 FROM account WHERE member_id IS NULL AND status = :active
        )
        ON CONFLICT (event_id) DO NOTHING
        RETURNING id
    ), requested AS (
        UPDATE connections
        SET sync_requested_at = :now, sync_requested_trigger = :trigger
        WHERE account_id = :account AND status = :active AND EXISTS (SELECT 1 FROM delivery)
    )
    SELECT account.id, account.member_id, account.status,
           EXISTS (SELECT 1 FROM delivery) AS recorded
    FROM account
    ORDER BY account.member_id IS NOT NULL, account.member_id
    """
)


def record_in_one_statement(svc: Services, event: WebhookIn) -> list[int] | None:
    """`record_in_session` on PostgreSQL in one round trip (see RECORD_DELIVERY). A pooled
    connection found dead is retried once on a fresh one; a delivery that was recorded
    before the answer was lost then reads as a duplicate, and its sync is still owed (the
    scheduler re-sends the wake-up)."""
    params = {
        "account": event.account_id,
        "event_id": event.id,
        "event_type": event.type,
        "now": utcnow(),
        "trigger": str(Trigger.WEBHOOK),
        "active": str(ConnectionStatus.ACTIVE),
    }
    for attempt in (1, 2):
        try:
            with svc.db.autocommit.connect() as conn:
                rows = conn.execute(RECORD_DELIVERY, params).all()
            break
        except DBAPIError as exc:
            if attempt == 2 or not exc.connection_invalidated:
                raise
    if not rows or rows[0].member_id is not None:
        raise NotFound(f"no connection for account {event.account_id!r}")
    admin = rows[0]
    if admin.status != ConnectionStatus.ACTIVE:
        raise Conflict(f"the connection is {admin.status}, not active; it cannot sync")
    if not admin.recorded:
        return None
    return [row.id for row in rows if row.status == ConnectionStatus.ACTIVE]


@document(
    "POST",
    "/webhooks/source",
    summary="Event types or members changed for an account: resync it in the background",
    description=(
        f'Signed: `{SIGNATURE_HEADER}: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>"'
        " with WEBHOOK_SECRET>`; several v1= entries may be sent while rotating the secret. "
        "A timestamp more than 5 minutes away is refused. A repeated id answers "
        '{"status": "duplicate"} and does nothing. Unknown fields in the body are ignored.'
    ),
    body=WebhookIn,
    responses={202: WebhookOut},
    errors=(401, 404, 409, 429, 503),
    headers=(
        Parameter(
            SIGNATURE_HEADER,
            "header",
            {"type": "string", "maxLength": MAX_HEADER},
            description='t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">',
        ),
    ),
    auth=False,
)
@bp.post("/webhooks/source")
def receive_webhook() -> Response:
    try:
        status = ingest(services())
    except DomainError as exc:
        outcome = next((OUTCOMES[c] for c in type(exc).__mro__ if c in OUTCOMES), exc.code)
        metrics.WEBHOOKS.labels(outcome).inc()
        raise
    metrics.WEBHOOKS.labels(status).inc()
    return json_response(WebhookOut(status=status), 202)


@bp.errorhandler(RateLimited)
def _rate_limited(exc: RateLimited) -> tuple[Response, int, dict[str, str]]:
    body = jsonify({"error": {"code": exc.code, "message": exc.message}})
    return body, exc.status, {"Retry-After": str(exc.retry_after)}
