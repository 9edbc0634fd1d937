"""POST /webhooks/source: signed event-type change notifications from the integrator.

Order matters, cheapest and least trusting first: size and content type (before reading the
body), the signature (before parsing JSON or touching the database), the body, the connection,
the per-account flood limit (one Redis round trip with the "a sync is already pending" check),
de-duplication by event id (insert, unique constraint) committed with the durable sync request
of every connection of the account, and only then a coalesced wake-up of a worker (skipped when
a queued sync has not started yet; it never fails the delivery: a broker outage only delays
the sync). Answers 202 at once; a worker syncs. A rejected delivery enqueues nothing and
stores nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Literal

from flask import Blueprint, Response, jsonify, request
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError

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
from service.infra.models import Trigger, WebhookDelivery
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


def check_rate(svc: Services, account_id: str, now: float, pending_key: str) -> bool:
    """Raise RateLimited when this account sent more than WEBHOOK_RATE_LIMIT_PER_MINUTE
    webhooks in the current minute; otherwise return whether a coalesced sync is already
    waiting (the pending flag `pending_key`). With Redis both are one pipelined round trip, so
    a burst for one account costs one Redis round trip per delivery and no broker publish."""
    window = int(now // WINDOW_SECONDS)
    pending = False
    coordinator = svc.coordinator
    if svc.redis is not None and isinstance(coordinator, RedisCoordinator):
        key = locks.webhook_rate_key(account_id, window)
        try:
            pipe = svc.redis.pipeline(transaction=False)
            pipe.incr(key)
            pipe.expire(key, 2 * WINDOW_SECONDS)
            pipe.exists(coordinator.prefix + pending_key)
            count, _, exists = pipe.execute()
            count, pending = int(count), bool(exists)
        except Exception:
            # Fail open: the limit protects us from floods, it is not correctness; a Redis
            # outage surfaces anyway when the sync is enqueued.
            log.warning("webhook rate counter unavailable; not limiting", exc_info=True)
            return False
    else:
        count = _local_counter.hit(account_id, window)
    if count > svc.settings.WEBHOOK_RATE_LIMIT_PER_MINUTE:
        retry_after = max(1, int(WINDOW_SECONDS - now % WINDOW_SECONDS))
        raise RateLimited(
            f"more than {svc.settings.WEBHOOK_RATE_LIMIT_PER_MINUTE} webhooks a minute for "
            "this account; retry later",
            retry_after=retry_after,
        )
    return pending


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

    session = db_session()
    connection, member_rows = account_connections(session, event.account_id)
    require_syncable(connection)
    # The whole account resyncs: the admin connection (which also does the shared links) and
    # every active member connection, each coalesced on its own.
    members = [c for c in member_rows if c.syncable]
    pending = check_rate(svc, event.account_id, now, locks.pending_flag(connection.id))
    session.add(
        WebhookDelivery(event_id=event.id, account_id=event.account_id, event_type=event.type)
    )
    # The delivery and the durable sync request commit together: once we answer 202 the sync
    # is owed even if the broker is down right now (the scheduler re-sends the wake-up).
    for owed in (connection, *members):
        mark_requested(owed, Trigger.WEBHOOK)
    try:
        session.commit()
    except IntegrityError:  # this event id was delivered before
        session.rollback()
        return "duplicate"
    if pending and not members:
        # A queued sync has not started yet: it reads the source when it starts, after this
        # delivery was recorded, so it covers this change; no flag write, no broker publish.
        return "accepted"
    for connection_id in [connection.id, *(m.id for m in members)]:
        wake_coalesced(svc, connection_id, str(Trigger.WEBHOOK))
    return "accepted"


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
