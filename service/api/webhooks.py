"""POST /webhooks/source: signed event-type change notifications from the integrator.

The hottest endpoint is served by a plain WSGI handler in front of Flask (`WebhookEndpoint`,
installed by the app factory): a delivery skips Flask's request context, cookie session and
hooks, so it costs little more than the HTTP floor. It answers in the same shape as every
other endpoint (the JSON error body, the security headers, `X-Request-Id`, `Server-Timing`).

Order matters, cheapest and least trusting first: size and content type (before reading the
body), the signature (before parsing JSON or touching the database), the body, then the
delivery's only round trip: on PostgreSQL one autocommitted statement (`RECORD_DELIVERY`),
prepared once per pooled connection and run through psycopg's libpq binding, on SQLite one
ORM transaction. It finds the
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

import json
import logging
import math
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from http import HTTPStatus
from typing import Any, Literal, NamedTuple, cast

import psycopg
from psycopg import pq
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
from service.sync.triggers import mark_requested, require_syncable, wake
from service.web.errors import error_body
from service.web.headers import RequestIds, security_headers

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
    """What RECORD_DELIVERY does, through the ORM in one transaction (SQLite)."""
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
            mark_requested(row, Trigger.WEBHOOK)
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
RECORD_DELIVERY = b"""
    WITH account AS (
        SELECT id, member_id, status FROM connections WHERE account_id = $1::varchar
    ), recent AS (
        SELECT count(*) AS n FROM (
            SELECT 1 FROM webhook_deliveries
            WHERE account_id = $1::varchar AND received_at > $2::timestamptz
            LIMIT $3::int
        ) AS in_window
    ), delivery AS (
        INSERT INTO webhook_deliveries (event_id, account_id, event_type, received_at)
        SELECT $4::varchar, $1::varchar, $5::varchar, $6::timestamptz
        WHERE EXISTS (SELECT 1 FROM account WHERE member_id IS NULL AND status = $7::varchar)
          AND (SELECT n FROM recent) < $3::int
        ON CONFLICT (event_id) DO NOTHING
        RETURNING id
    ), requested AS (
        UPDATE connections
        SET sync_requested_at = $6::timestamptz, sync_requested_trigger = $8::varchar
        WHERE id IN (SELECT id FROM account WHERE status = $7::varchar)
          AND (sync_requested_at IS NULL OR sync_requested_at > $6::timestamptz)
          AND EXISTS (SELECT 1 FROM delivery)
        RETURNING id
    )
    SELECT account.id, account.member_id, account.status, (SELECT n FROM recent),
           EXISTS (SELECT 1 FROM delivery), account.id IN (SELECT id FROM requested)
    FROM account
    ORDER BY account.member_id IS NOT NULL, account.member_id
"""
STATEMENT = b"linksync_record_delivery"
# Looked up once: an enum member lookup costs a microsecond each on Python 3.11.
RESULT_OK = frozenset({int(pq.ExecStatus.COMMAND_OK), int(pq.ExecStatus.TUPLES_OK)})


class ConnectionRow(NamedTuple):
    id: int
    member_id: str | None
    status: str
    recent: int  # the account's deliveries in the window (at most the limit)
    recorded: bool  # this delivery was inserted
    woken: bool  # this statement wrote the connection's sync request


def record_in_one_statement(svc: Services, event: WebhookIn, now: datetime) -> Recorded:
    """`record_in_session` on PostgreSQL in one round trip (see RECORD_DELIVERY). A pooled
    connection found dead is retried once on a fresh one; a delivery that was recorded before
    the answer was lost then reads as a duplicate, and its sync is still owed (the scheduler
    re-sends the wake-up)."""
    limit = svc.settings.WEBHOOK_RATE_LIMIT_PER_MINUTE
    rows = _execute(
        svc,
        [
            event.account_id,
            (now - WINDOW).isoformat(),
            str(limit),
            event.id,
            event.type,
            now.isoformat(),
            str(ConnectionStatus.ACTIVE),
            str(Trigger.WEBHOOK),
        ],
    )
    if not rows or rows[0].member_id is not None:
        raise NotFound(f"no connection for account {event.account_id!r}")
    admin = rows[0]
    if admin.status != ConnectionStatus.ACTIVE:
        raise Conflict(f"the connection is {admin.status}, not active; it cannot sync")
    if admin.recent >= limit:
        raise flood_refusal(svc, event.account_id, now)
    if not admin.recorded:
        return Recorded(duplicate=True, woken=[])
    return Recorded(duplicate=False, woken=[row.id for row in rows if row.woken])


# Connections of the autocommit pool on which the statement is prepared.
_prepared: weakref.WeakSet[psycopg.Connection[Any]] = weakref.WeakSet()


def _execute(svc: Services, params: list[str]) -> list[ConnectionRow]:
    """RECORD_DELIVERY, prepared once per pooled connection, executed through psycopg's
    libpq binding (`psycopg.pq`): the cursor layer's adaptation and result machinery cost
    as much Python per delivery as the rest of the endpoint, for eight text parameters and
    six plain columns (text format both ways)."""
    unavailable = DatabaseUnavailable()
    values = [value.encode() for value in params]
    for attempt in (1, 2):
        try:
            pooled = svc.db.autocommit.raw_connection()
        except (psycopg.OperationalError, SQLAlchemyOperationalError) as exc:
            # Cannot connect at all (down, restarting, refusing connections).
            log.warning("database unavailable", extra={"error": type(exc).__name__})
            raise unavailable from None
        connection = cast(psycopg.Connection[Any], pooled.dbapi_connection)
        pgconn = connection.pgconn
        try:
            if connection not in _prepared:
                _check(pgconn, pgconn.prepare(STATEMENT, RECORD_DELIVERY))
                _prepared.add(connection)
            result = _check(pgconn, pgconn.exec_prepared(STATEMENT, values))
            return [_row(result, n) for n in range(result.ntuples)]
        except psycopg.OperationalError as exc:
            if attempt == 2:
                log.warning("database unavailable", extra={"error": type(exc).__name__})
                raise unavailable from None
            # Dead or dying (a restart, a failover, a terminated backend): retry once on a
            # fresh connection. The statement is idempotent (the event id de-duplicates).
            pooled.invalidate()
        finally:
            pooled.close()
    raise AssertionError("unreachable")


def _check(pgconn: pq.abc.PGconn, result: pq.abc.PGresult) -> pq.abc.PGresult:
    """The result, or the error it carries as psycopg's exception for its SQLSTATE (an
    OperationalError when the connection itself is gone)."""
    if result.status in RESULT_OK:
        return result
    message = (result.error_message or pgconn.error_message).decode(errors="replace").strip()
    if pgconn.status != pq.ConnStatus.OK:
        raise psycopg.OperationalError(message)
    sqlstate = result.error_field(pq.DiagnosticField.SQLSTATE)
    error = psycopg.errors.lookup(sqlstate.decode()) if sqlstate else psycopg.DatabaseError
    raise error(message)


def _row(result: pq.abc.PGresult, n: int) -> ConnectionRow:
    id_, member_id, status, recent, recorded, woken = (
        result.get_value(n, column) for column in range(6)
    )
    return ConnectionRow(
        id=int(bytes(id_ or b"0")),
        member_id=None if member_id is None else bytes(member_id).decode(),
        status=bytes(status or b"").decode(),
        recent=int(bytes(recent or b"0")),
        recorded=recorded == b"t",
        woken=woken == b"t",
    )


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

    def __init__(self, app: WSGIApp, svc: Services, request_ids: RequestIds) -> None:
        self.app = app
        self.svc = svc
        self.request_ids = request_ids  # shared with Flask's hook
        self.headers = [*security_headers(https=svc.settings.https), ("Cache-Control", "no-store")]

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") != PATH:
            return self.app(environ, start_response)
        started = time.perf_counter()
        request_id = self.request_ids(environ.get("HTTP_X_REQUEST_ID"))
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
        exc = DatabaseUnavailable()
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
