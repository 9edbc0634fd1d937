"""POST /webhooks/source: signed event-type change notifications from the integrator.

Order matters: size and content type, then the signature (before any parsing or database
work), then the body, then de-duplication by event id, then the flood limit, then a coalesced
enqueue after the delivery row is committed. Answers 202 at once; the sync runs in a worker.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from flask import Blueprint, Response, jsonify, request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from service import metrics
from service.api.signatures import SignatureError, verify
from service.connect_sessions import validate_account_id
from service.errors import (
    Conflict,
    NotFound,
    PayloadTooLarge,
    TooManyRequests,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
)
from service.extensions import db_session, services
from service.models import Connection, ConnectionStatus, Trigger, WebhookDelivery
from service.sync.triggers import request_coalesced_sync

bp = Blueprint("api_webhooks", __name__)

SUPPORTED_TYPES = ("event_types.changed",)


class _LocalWindow:
    """Per-account fixed-window counter inside one process (no Redis configured)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, int], int] = {}

    def hit(self, key: str, window: int) -> int:
        with self._lock:
            slot = (key, window)
            self._counts[slot] = self._counts.get(slot, 0) + 1
            if len(self._counts) > 10_000:
                self._counts = {k: v for k, v in self._counts.items() if k[1] >= window}
            return self._counts[slot]


_local_window = _LocalWindow()


def _over_limit(account_id: str) -> int | None:
    """Seconds to wait when this account sent more webhooks this minute than allowed."""
    svc = services()
    limit = svc.settings.WEBHOOK_RATE_LIMIT_PER_MINUTE
    now = time.time()
    window = int(now // 60)
    key = f"webhook-rate:{account_id}:{window}"
    if svc.redis is not None:
        pipe = svc.redis.pipeline()
        pipe.incr("linksync:" + key)
        pipe.expire("linksync:" + key, 120)
        count = int(pipe.execute()[0])
    else:
        count = _local_window.hit(account_id, window)
    if count > limit:
        return max(1, int(60 - now % 60))
    return None


def parse_event(raw: bytes) -> dict[str, str]:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ValidationFailed("body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ValidationFailed("body must be a JSON object")
    event_id = body.get("id")
    if not isinstance(event_id, str) or not 1 <= len(event_id) <= 255:
        raise ValidationFailed("id must be a string of 1 to 255 characters", field="id")
    event_type = body.get("type")
    if event_type not in SUPPORTED_TYPES:
        raise ValidationFailed(f"type must be one of: {', '.join(SUPPORTED_TYPES)}", field="type")
    account_id = validate_account_id(body.get("account_id"))
    return {"id": event_id, "type": str(event_type), "account_id": account_id}


def _fail(outcome: str, error: Exception) -> Exception:
    metrics.WEBHOOKS.labels(outcome).inc()
    return error


@bp.post("/webhooks/source")
def receive() -> tuple[Response, int]:
    svc = services()
    settings = svc.settings
    limit = settings.WEBHOOK_MAX_BODY_BYTES
    if request.content_length is not None and request.content_length > limit:
        raise _fail("too_large", PayloadTooLarge(f"body larger than {limit} bytes"))
    raw = request.stream.read(limit + 1)
    if len(raw) > limit:
        raise _fail("too_large", PayloadTooLarge(f"body larger than {limit} bytes"))
    if request.mimetype != "application/json":
        raise _fail("bad_request", UnsupportedMediaType("Content-Type must be application/json"))
    try:
        verify(
            settings.WEBHOOK_SECRET or "",
            request.headers.get("X-LinkSync-Signature"),
            raw,
            time.time(),
        )
    except SignatureError as exc:
        raise _fail("unauthorized", Unauthorized(str(exc))) from None
    try:
        event = parse_event(raw)
    except ValidationFailed as exc:
        raise _fail("bad_request", exc) from None

    session = db_session()
    connection = session.scalar(
        select(Connection).where(Connection.account_id == event["account_id"])
    )
    if connection is None:
        raise _fail(
            "unknown_account", NotFound(f"no connection for account {event['account_id']!r}")
        )
    wait = _over_limit(event["account_id"])
    if wait is not None:
        metrics.WEBHOOKS.labels("rate_limited").inc()
        error = TooManyRequests("too many webhooks for this account; slow down")
        response, status = _error_json(error)
        response.headers["Retry-After"] = str(wait)
        return response, status
    if connection.status != ConnectionStatus.ACTIVE:
        raise _fail("inactive", Conflict(f"connection is {connection.status}; nothing to sync"))
    session.add(
        WebhookDelivery(
            event_id=event["id"], account_id=event["account_id"], event_type=event["type"]
        )
    )
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        metrics.WEBHOOKS.labels("duplicate").inc()
        return jsonify(status="duplicate"), 202
    request_coalesced_sync(svc, connection.id, Trigger.WEBHOOK)
    metrics.WEBHOOKS.labels("accepted").inc()
    return jsonify(status="accepted"), 202


def _error_json(error: Any) -> tuple[Response, int]:
    return jsonify({"error": {"code": error.code, "message": error.message}}), error.status
