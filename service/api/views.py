"""The integrator API (/api/v1). Views parse, call one service function, serialize.

Every route is declared with `@route(...)`, which also records it for the OpenAPI document
(service/api/openapi.py), so the document cannot drift from the code.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, jsonify, request
from pydantic import BaseModel, ValidationError
from sqlalchemy import func, select

from service.api import openapi
from service.api.schemas import (
    CloseOrganization,
    CloseUser,
    ConnectionOut,
    ConnectSessionIn,
    ConnectSessionOut,
    LastSync,
    LinkCounts,
    LinkOut,
    LinkPage,
    SyncQueued,
    SyncRunOut,
)
from service.connect_sessions import create_connect_session, validate_account_id
from service.connections import disconnect, get_connection
from service.errors import Conflict, NotFound, Unauthorized, UnsupportedMediaType, ValidationFailed
from service.extensions import db_session, services
from service.models import Connection, ConnectionStatus, SyncedLink, SyncRun, Trigger
from service.sync.triggers import request_sync

bp = Blueprint("api_views", __name__, url_prefix="/api/v1")

MAX_LINK_PAGE = 500


def route(
    method: str,
    path: str,
    *,
    summary: str,
    responses: dict[int, type[BaseModel] | None],
    body: type[BaseModel] | None = None,
    query: list[dict[str, Any]] | None = None,
    auth: bool = True,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        openapi.register(
            openapi.Operation(
                method=method.lower(),
                path="/api/v1" + path,
                summary=summary,
                responses=responses,
                body=body,
                query=query or [],
                auth=auth,
                operation_id=view.__name__,
            )
        )
        flask_path = path.replace("{account_id}", "<account_id>").replace(
            "{run_id}", "<int:run_id>"
        )

        def guarded(**kwargs: Any) -> Any:
            if auth:
                _authenticate()
            if "account_id" in kwargs:
                kwargs["account_id"] = validate_account_id(kwargs["account_id"])
            return view(**kwargs)

        guarded.__name__ = view.__name__
        bp.add_url_rule(flask_path, view_func=guarded, methods=[method])
        return view

    return decorate


def _authenticate() -> None:
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key:
        raise Unauthorized("send the API key as 'Authorization: Bearer <key>'")
    if not any(hmac.compare_digest(key.encode(), k.encode()) for k in services().settings.API_KEYS):
        raise Unauthorized("unknown API key")


def _parse(model: type[BaseModel]) -> Any:
    if request.mimetype != "application/json":
        raise UnsupportedMediaType("Content-Type must be application/json")
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise ValidationFailed("body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        message = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
        raise ValidationFailed(f"{field}: {message}" if field else message, field=field) from None


def _json(model: BaseModel, status: int = 200) -> tuple[Response, int]:
    return Response(model.model_dump_json(), status=status, mimetype="application/json"), status


def connection_out(connection: Connection, counts: dict[str, int]) -> ConnectionOut:
    return ConnectionOut(
        account_id=connection.account_id,
        status=connection.status,  # type: ignore[arg-type]
        status_reason=connection.status_reason,
        close_user=CloseUser(
            id=connection.close_user_id,
            name=connection.close_user_name,
            email=connection.close_user_email,
        ),
        close_organization=CloseOrganization(
            id=connection.close_org_id, name=connection.close_org_name
        ),
        links=LinkCounts(
            total=sum(counts.values()),
            synced=counts.get("synced", 0),
            pending=counts.get("pending", 0),
            error=counts.get("error", 0),
            deleting=counts.get("deleting", 0),
        ),
        last_sync=LastSync(
            at=connection.last_sync_at,
            status=connection.last_sync_status,
            run_id=connection.last_sync_run_id,
        )
        if connection.last_sync_run_id
        else None,
        connected_at=connection.connected_at,
        disconnected_at=connection.disconnected_at,
        next_sync_at=connection.next_sync_at,
    )


def link_counts(connection_id: int) -> dict[str, int]:
    rows = db_session().execute(
        select(SyncedLink.state, func.count())
        .where(SyncedLink.connection_id == connection_id)
        .group_by(SyncedLink.state)
    )
    return {state: count for state, count in rows}


@route(
    "POST",
    "/connect-sessions",
    summary="Create a connect session: a short-lived link for one account's admin",
    body=ConnectSessionIn,
    responses={201: ConnectSessionOut, 400: None, 401: None, 415: None},
)
def create_session() -> tuple[Response, int]:
    body = _parse(ConnectSessionIn)
    session = db_session()
    connect, token, url = create_connect_session(
        session, services().settings, body.account_id, body.return_url
    )
    session.commit()
    return _json(
        ConnectSessionOut(token=token, connect_url=url, expires_at=connect.expires_at), 201
    )


@route(
    "GET",
    "/accounts/{account_id}/connection",
    summary="Connection status, Close user and organization, link counts, last sync",
    responses={200: ConnectionOut, 400: None, 401: None, 404: None},
)
def get_status(account_id: str) -> tuple[Response, int]:
    connection = get_connection(db_session(), account_id)
    return _json(connection_out(connection, link_counts(connection.id)))


@route(
    "GET",
    "/accounts/{account_id}/links",
    summary="The account's synced links with their state and last error",
    responses={200: LinkPage, 400: None, 401: None, 404: None},
    query=[
        {"name": "limit", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LINK_PAGE}},
        {"name": "cursor", "schema": {"type": "string", "maxLength": 32}},
    ],
)
def list_links(account_id: str) -> tuple[Response, int]:
    session = db_session()
    connection = get_connection(session, account_id)
    limit = _int_arg("limit", 100, 1, MAX_LINK_PAGE)
    after = _int_arg("cursor", 0, 0, 2**62)
    rows = session.scalars(
        select(SyncedLink)
        .where(SyncedLink.connection_id == connection.id, SyncedLink.id > after)
        .order_by(SyncedLink.id)
        .limit(limit + 1)
    ).all()
    page = [
        LinkOut(
            source_id=row.source_id,
            name=row.name,
            url=row.url,
            state=row.state,  # type: ignore[arg-type]
            close_link_id=row.close_link_id,
            last_error=row.last_error,
            last_synced_at=row.last_synced_at,
        )
        for row in rows[:limit]
    ]
    cursor = str(rows[limit - 1].id) if len(rows) > limit else None
    return _json(LinkPage(data=page, next_cursor=cursor))


@route(
    "POST",
    "/accounts/{account_id}/sync",
    summary="Trigger a resync now",
    responses={202: SyncQueued, 400: None, 401: None, 404: None, 409: None},
)
def trigger_sync(account_id: str) -> tuple[Response, int]:
    session = db_session()
    connection = get_connection(session, account_id)
    if connection.status != ConnectionStatus.ACTIVE:
        raise Conflict(f"connection is {connection.status}; it cannot sync")
    run = request_sync(session, services(), connection, Trigger.MANUAL)
    session.commit()  # the enqueue fires after this commit
    return _json(SyncQueued(run_id=run.id, status="queued"), 202)


@route(
    "GET",
    "/sync-runs/{run_id}",
    summary="One sync run: trigger, timing, counts, error",
    responses={200: SyncRunOut, 401: None, 404: None},
)
def get_run(run_id: int) -> tuple[Response, int]:
    session = db_session()
    row = session.execute(
        select(SyncRun, Connection.account_id)
        .join(Connection, Connection.id == SyncRun.connection_id)
        .where(SyncRun.id == run_id)
    ).first()
    if row is None:
        raise NotFound(f"no sync run {run_id}")
    run, account_id = row
    duration = (
        (run.finished_at - run.started_at).total_seconds()
        if run.finished_at and run.started_at
        else None
    )
    return _json(
        SyncRunOut(
            id=run.id,
            account_id=account_id,
            trigger=run.trigger,
            status=run.status,  # type: ignore[arg-type]
            queued_at=run.queued_at,
            started_at=run.started_at,
            finished_at=run.finished_at,
            duration_seconds=duration,
            counts={  # type: ignore[arg-type]
                "created": run.created,
                "updated": run.updated,
                "deleted": run.deleted,
                "unchanged": run.unchanged,
                "failed": run.failed,
            },
            progress={"done": run.progress_done, "total": run.progress_total},  # type: ignore[arg-type]
            error=run.error,
        )
    )


@route(
    "DELETE",
    "/accounts/{account_id}/connection",
    summary="Disconnect: remove our links from Close (unless keep_links=true), revoke, wipe tokens",
    responses={200: ConnectionOut, 400: None, 401: None, 404: None, 409: None, 503: None},
    query=[
        {"name": "keep_links", "schema": {"type": "string", "enum": ["true", "false", "1", "0"]}}
    ],
)
def delete_connection(account_id: str) -> tuple[Response, int]:
    raw = request.args.get("keep_links", "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise ValidationFailed("keep_links must be true or false", field="keep_links")
    connection_id = get_connection(db_session(), account_id).id
    connection = disconnect(services(), connection_id, keep_links=raw in ("true", "1"))
    return _json(connection_out(connection, link_counts(connection.id)))


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise ValidationFailed(f"{name} must be an integer from {low} to {high}", field=name)
    return int(raw)


@bp.get("/openapi.json")
def openapi_document() -> Response:
    return jsonify(openapi.document())
