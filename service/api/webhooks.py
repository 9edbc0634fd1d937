"""POST /webhooks/source: signed event-type change notifications from the integrator.

The hottest endpoint is served by a plain WSGI handler in front of Flask (`WebhookEndpoint`,
installed by the app factory): a delivery skips Flask's request context, cookie session and
hooks, so it costs little more than the HTTP floor. It answers in the same shape as every
other endpoint (the JSON error body, the security headers, `X-Request-Id`, `Server-Timing`).

Order matters, cheapest and least trusting first: size and content type (before reading the
body), the signature (before parsing JSON or touching the database), the body, then the
delivery's only round trip: on PostgreSQL one autocommitted, prepared statement through the
pool's psycopg connection (`RECORD_DELIVERY`), on SQLite one ORM transaction. It finds the
account's connections, refuses a flood (more than WEBHOOK_RATE_LIMIT_PER_MINUTE deliveries of
the account in the last minute, counted from the delivery rows: exact across processes and
machines), de-duplicates by event id (unique constraint) and records the durable sync request
of every active connection of the account that has none pending, all at once. Only the
connections it marked are woken: a request that was already pending is claimed by a run that
reads the source after this delivery committed, so it covers this change (no Redis on this
path, and a burst publishes one wake-up). The wake-up never fails the delivery: a broker
outage only delays the sync (the scheduler re-sends it). Answers 202 at once; a worker syncs.
A rejected delivery enqueues nothing and stores nothing.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from http import HTTPStatus
from typing import Any, Literal, cast

import psycopg
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.exc import OperationalError as SQLAlchemyOperationalError
from werkzeug.wsgi import get_input_stream

from service.api.openapi import Parameter
from service.api.routing import document, validation_failed
from service.api.schemas import WebhookIn, WebhookOut
from service.api.signatures import MAX_HEADER, SignatureError, verify
from service.connections.queries import account_connections
from service.errors import (
    Conflict,
    DatabaseUnavailable,
    DomainError,
    NotFound,
    PayloadTooLarge,
    TooManyRequests,
    Unauthorized,
    UnsupportedMediaType,
    UpstreamUnavailable,
    ValidationFailed,
)
from service.infra import logs, metrics
from service.infra.db import utcnow
from service.infra.models import ConnectionStatus, Trigger, WebhookDelivery
from service.services import Services
from service.sync.triggers import require_syncable, wake
from service.web.errors import error_body
from service.web.headers import security_headers

log = logging.getLogger(__name__)

PATH = "/webhooks/source"
SIGNATURE_HEADER = "X-LinkSync-Signature"
SIGNATURE_ENVIRON = "HTTP_X_LINKSYNC_SIGNATURE"
SUPPORTED_TYPES = ("event_types.changed", "members.changed")
WINDOW = timedelta(seconds=60)

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


@dataclass(frozen=True)
class Recorded:
    duplicate: bool
    woken: list[int]  # connections whose request this delivery created: wake them


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


def read_body(environ: dict[str, Any], limit: int) -> bytes:
    length = environ.get("CONTENT_LENGTH")
    declared = int(length) if length and length.isdigit() else None
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"body larger than {limit} bytes")
    mimetype = str(environ.get("CONTENT_TYPE", "")).partition(";")[0].strip().lower()
    if mimetype != "application/json":
        raise UnsupportedMediaType("Content-Type must be application/json")
    # Read at most one byte past the limit, whatever Content-Length says (or if it is absent);
    # werkzeug's stream is bounded by Content-Length and safe without one, as Flask's is.
    stream = get_input_stream(environ)
    if declared is not None:  # bounded by Content-Length (at most the limit): one read
        return bytes(stream.read(declared))
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = stream.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise PayloadTooLarge(f"body larger than {limit} bytes")
    return b"".join(chunks)


def ingest(svc: Services, environ: dict[str, Any]) -> Literal["accepted", "duplicate"]:
    """Accept one delivery; return "accepted" or "duplicate", or raise a DomainError."""
    settings = svc.settings
    raw = read_body(environ, settings.WEBHOOK_MAX_BODY_BYTES)
    if not settings.WEBHOOK_SECRET:  # fail closed: an empty secret would sign for anyone
        raise Unauthorized("webhooks are not configured here (WEBHOOK_SECRET is unset)")
    try:
        verify(settings.WEBHOOK_SECRET, environ.get(SIGNATURE_ENVIRON), raw, time.time())
    except SignatureError as exc:
        raise Unauthorized(str(exc)) from None
    event = parse_event(raw)
    # The delivery and the durable sync request of every syncable connection of the account
    # (the admin's, which also does the shared links, and each active member's) commit
    # together: once we answer 202 the sync is owed even if the broker is down right now
    # (the scheduler re-sends the wake-up).
    record = record_in_one_statement if svc.db.is_postgres else record_in_session
    recorded = record(svc, event, utcnow())
    for connection_id in recorded.woken:
        wake(svc, connection_id, str(Trigger.WEBHOOK), None)
    return "duplicate" if recorded.duplicate else "accepted"


def flood_refusal(svc: Services, account_id: str, now: datetime) -> RateLimited:
    """The refusal of a delivery over the limit, with Retry-After: the seconds until the
    limit-th newest delivery of the account leaves the window (then one more fits)."""
    limit = svc.settings.WEBHOOK_RATE_LIMIT_PER_MINUTE
    with svc.db.session() as session:
        oldest = session.scalar(
            select(WebhookDelivery.received_at)
            .where(
                WebhookDelivery.account_id == account_id,
                WebhookDelivery.received_at > now - WINDOW,
            )
            .order_by(WebhookDelivery.received_at.desc())
            .offset(limit - 1)
            .limit(1)
        )
    wait = (oldest + WINDOW - now).total_seconds() if oldest is not None else 1.0
    return RateLimited(
        f"more than {limit} webhooks a minute for this account; retry later",
        retry_after=max(1, math.ceil(wait)),
    )


def record_in_session(svc: Services, event: WebhookIn, now: datetime) -> Recorded:
    """`RECORD_DELIVERY` through the ORM, in one transaction (SQLite)."""
    limit = svc.settings.WEBHOOK_RATE_LIMIT_PER_MINUTE
    with svc.db.sessionmaker() as session:
        connection, member_rows = account_connections(session, event.account_id)
        require_syncable(connection)
        recent = session.scalar(
            select(func.count()).select_from(
                select(WebhookDelivery.id)
                .where(
                    WebhookDelivery.account_id == event.account_id,
                    WebhookDelivery.received_at > now - WINDOW,
                )
                .limit(limit)
                .subquery()
            )
        )
        if (recent or 0) >= limit:
            raise flood_refusal(svc, event.account_id, now)
        session.add(
            WebhookDelivery(
                event_id=event.id,
                account_id=event.account_id,
                event_type=event.type,
                received_at=now,
            )
        )
        woken = [
            row
            for row in (connection, *(c for c in member_rows if c.syncable))
            if row.sync_requested_at is None or row.sync_requested_at > now
        ]
        for row in woken:
            row.sync_requested_at = now
            row.sync_requested_trigger = str(Trigger.WEBHOOK)
        try:
            session.commit()
        except IntegrityError:
            return Recorded(duplicate=True, woken=[])
        return Recorded(duplicate=False, woken=[row.id for row in woken])


# PostgreSQL: the same in one autocommitted statement, so a delivery costs one database round
# trip. The delivery is inserted only when the admin connection is active and the account is
# under its flood limit (the count stops at the limit); a request is written only when the
# delivery was new and the connection has none pending (or only one put off into the future by
# a failed run), and it is targeted by primary key. PostgreSQL runs a data-modifying WITH
# whether or not the query reads it; the SELECT sees the rows as they were before.
RECORD_DELIVERY = """
    WITH account AS (
        SELECT id, member_id, status FROM connections WHERE account_id = %(account)s
    ), recent AS (
        SELECT count(*) AS n FROM (
            SELECT 1 FROM webhook_deliveries
            WHERE account_id = %(account)s AND received_at > %(since)s
            LIMIT %(limit)s
        ) AS in_window
    ), delivery AS (
        INSERT INTO webhook_deliveries (event_id, account_id, event_type, received_at)
        SELECT %(event_id)s, %(account)s, %(event_type)s, %(now)s
        WHERE EXISTS (SELECT 1 FROM account WHERE member_id IS NULL AND status = %(active)s)
          AND (SELECT n FROM recent) < %(limit)s
        ON CONFLICT (event_id) DO NOTHING
        RETURNING id
    ), requested AS (
        UPDATE connections
        SET sync_requested_at = %(now)s, sync_requested_trigger = %(trigger)s
        WHERE id IN (SELECT id FROM account WHERE status = %(active)s)
          AND (sync_requested_at IS NULL OR sync_requested_at > %(now)s)
          AND EXISTS (SELECT 1 FROM delivery)
        RETURNING id
    )
    SELECT account.id, account.member_id, account.status, (SELECT n FROM recent),
           EXISTS (SELECT 1 FROM delivery), account.id IN (SELECT id FROM requested)
    FROM account
    ORDER BY account.member_id IS NOT NULL, account.member_id
"""


def record_in_one_statement(svc: Services, event: WebhookIn, now: datetime) -> Recorded:
    """`record_in_session` on PostgreSQL in one round trip (see RECORD_DELIVERY), on the
    autocommit pool's psycopg connection, prepared. A pooled connection found dead is
    retried once on a fresh one; a delivery that was recorded before the answer was lost then
    reads as a duplicate, and its sync is still owed (the scheduler re-sends the wake-up)."""
    limit = svc.settings.WEBHOOK_RATE_LIMIT_PER_MINUTE
    params = {
        "account": event.account_id,
        "event_id": event.id,
        "event_type": event.type,
        "now": now,
        "since": now - WINDOW,
        "limit": limit,
        "trigger": str(Trigger.WEBHOOK),
        "active": str(ConnectionStatus.ACTIVE),
    }
    rows = _execute(svc, RECORD_DELIVERY, params)
    if not rows or rows[0][1] is not None:
        raise NotFound(f"no connection for account {event.account_id!r}")
    _, _, status, recent, recorded, _ = rows[0]
    if status != ConnectionStatus.ACTIVE:
        raise Conflict(f"the connection is {status}, not active; it cannot sync")
    if recent >= limit:
        raise flood_refusal(svc, event.account_id, now)
    if not recorded:
        return Recorded(duplicate=True, woken=[])
    return Recorded(duplicate=False, woken=[row[0] for row in rows if row[5]])


def _execute(svc: Services, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    unavailable = DatabaseUnavailable("The database is unavailable right now; retry shortly.")
    for attempt in (1, 2):
        try:
            pooled = svc.db.autocommit.raw_connection()
        except (psycopg.OperationalError, SQLAlchemyOperationalError) as exc:
            # Cannot connect at all (down, restarting, refusing connections).
            log.warning("database unavailable", extra={"error": type(exc).__name__})
            raise unavailable from None
        connection = cast(psycopg.Connection[tuple[Any, ...]], pooled.dbapi_connection)
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql, params, prepare=True)
                return list(cursor.fetchall())
        except psycopg.OperationalError:
            if attempt == 2 or not connection.broken:
                log.warning("database unavailable", extra={"error": "OperationalError"})
                raise unavailable from None
            pooled.invalidate()  # dead (a restart, a failover): retry on a fresh connection
        finally:
            pooled.close()
    raise AssertionError("unreachable")


# The endpoint ------------------------------------------------------------------------------

WSGIApp = Callable[[dict[str, Any], Any], Iterable[bytes]]


@document(
    "POST",
    PATH,
    summary="Event types or members changed for an account: resync it in the background",
    description=(
        f'Signed: `{SIGNATURE_HEADER}: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>"'
        " with WEBHOOK_SECRET>`; several v1= entries may be sent while rotating the secret. "
        "A timestamp more than 5 minutes away is refused. A repeated id answers "
        '{"status": "duplicate"} and does nothing. Unknown fields in the body are ignored. '
        "More than WEBHOOK_RATE_LIMIT_PER_MINUTE deliveries for one account within a minute "
        "answer 429 with Retry-After."
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
def receive_webhook(svc: Services, environ: dict[str, Any]) -> WebhookOut:
    """One delivery, counted by outcome in linksync_webhook_deliveries_total."""
    try:
        status = ingest(svc, environ)
    except DomainError as exc:
        outcome = next((OUTCOMES[c] for c in type(exc).__mro__ if c in OUTCOMES), exc.code)
        metrics.WEBHOOKS.labels(outcome).inc()
        raise
    metrics.WEBHOOKS.labels(status).inc()
    return WebhookOut(status=status)


class WebhookEndpoint:
    """WSGI middleware: answers PATH itself and passes every other request to `app`."""

    def __init__(self, app: WSGIApp, svc: Services) -> None:
        self.app = app
        self.svc = svc
        self.headers = [*security_headers(https=svc.settings.https), ("Cache-Control", "no-store")]
        # Request ids: a random prefix per endpoint and a counter (unique, no syscall each).
        prefix, counter = secrets.token_hex(4), itertools.count()
        self.new_request_id = lambda: f"{prefix}{next(counter) & 0xFFFFFFFF:08x}"

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") != PATH:
            return self.app(environ, start_response)
        started = time.perf_counter()
        request_id = str(environ.get("HTTP_X_REQUEST_ID", ""))[:64] or self.new_request_id()
        logs.clear()
        logs.bind(request_id=request_id, path=PATH)
        status, extra = 202, list[tuple[str, str]]()
        try:
            if environ.get("REQUEST_METHOD") != "POST":
                raise MethodNotAllowed()
            data = receive_webhook(self.svc, environ).model_dump_json().encode()
        except Exception as exc:  # every failure becomes a JSON answer
            status, code, message, field, extra = _refusal(exc)
            data = json.dumps({"error": error_body(code, message, field)}).encode()
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(data))),
            ("X-Request-Id", request_id),
            ("Server-Timing", f"app;dur={(time.perf_counter() - started) * 1000:.2f}"),
            *self.headers,
            *extra,
        ]
        start_response(f"{status} {HTTPStatus(status).phrase}", headers)
        return [data]


class MethodNotAllowed(DomainError):
    status = 405
    code = "method_not_allowed"

    def __init__(self) -> None:
        super().__init__("only POST is allowed here")


def _refusal(exc: Exception) -> tuple[int, str, str, str | None, list[tuple[str, str]]]:
    """(status, code, message, field, extra headers) for a delivery that failed: the answer
    Flask's error handlers give elsewhere."""
    if isinstance(exc, SQLAlchemyOperationalError):  # the database went away (SQLite path)
        log.warning("database unavailable", extra={"error": type(exc).__name__})
        exc = DatabaseUnavailable("The database is unavailable right now; retry shortly.")
    if not isinstance(exc, DomainError):
        log.exception("unhandled error", exc_info=exc)
        return 500, "internal_error", "Something went wrong on our side.", None, []
    extra: list[tuple[str, str]] = []
    if isinstance(exc, RateLimited):
        extra.append(("Retry-After", str(exc.retry_after)))
    elif isinstance(exc, UpstreamUnavailable):
        extra.append(("Retry-After", "5"))
    elif isinstance(exc, MethodNotAllowed):
        extra.append(("Allow", "POST"))
    return exc.status, exc.code, exc.message, exc.field, extra
