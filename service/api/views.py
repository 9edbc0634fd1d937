"""The integrator API (/api/v1). Views parse, call one service function, serialize.

Every route is declared with `@route(...)`, which registers it on the blueprint AND records it
in OPERATIONS, from which service/api/openapi.py builds /api/v1/openapi.json; `@document(...)`
records an operation served elsewhere (the webhook). The same pydantic models parse the
requests, serialize the answers and describe both in the document, so it cannot drift.

    @route("GET", "/accounts/{account_id}/links", summary="...", query=LinksQuery,
           responses={200: LinkPage})
    def list_links(account_id: str, query: LinksQuery) -> LinkPage: ...

The wrapper checks the API key, validates path identifiers, parses `query` and `body` models
(400 naming the field), calls the view and serializes the model it returns with the status
declared for that model. Standard error answers (401, 400, 404, 413, 415) are documented from
what the route declares; add others with `errors=(409, ...)`.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Callable, Iterable
from typing import Any

from flask import Blueprint, Response, request
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from service.api import openapi, queries
from service.api.openapi import Operation, Parameter
from service.api.schemas import (
    ACCOUNT_ID_SCHEMA,
    RUN_ID_MAX,
    CloseOrganization,
    CloseUser,
    ConnectionOut,
    ConnectSessionIn,
    ConnectSessionOut,
    DisconnectQuery,
    LastSync,
    LinkCounts,
    LinkOut,
    LinkPage,
    LinksQuery,
    OpenAPIDocument,
    RunCounts,
    RunProgress,
    SyncQueued,
    SyncRunOut,
)
from service.connect_sessions import create_connect_session, validate_account_id
from service.connections import disconnect, get_connection
from service.errors import Conflict, Unauthorized, UnsupportedMediaType, ValidationFailed
from service.extensions import db_session, services
from service.models import Connection, ConnectionStatus, SyncedLink, Trigger
from service.sync.triggers import request_sync

PREFIX = "/api/v1"
bp = Blueprint("api_views", __name__, url_prefix=PREFIX)

OPERATIONS: list[Operation] = []

# Path parameters: the Flask converter that matches them and their documented schema. An
# integer out of range does not match, so it is a JSON 404 like any unknown path.
PATH_PARAMS: dict[str, tuple[str, dict[str, Any]]] = {
    "account_id": ("string", ACCOUNT_ID_SCHEMA),
    "run_id": (
        f"int(min=1, max={RUN_ID_MAX})",
        {"type": "integer", "minimum": 1, "maximum": RUN_ID_MAX},
    ),
}

View = Callable[..., Any]


def _path_params(path: str) -> tuple[list[str], str]:
    """The parameter names of an OpenAPI path template, and the Flask rule for it."""
    names: list[str] = []
    rule = path
    for name, (converter, _schema) in PATH_PARAMS.items():
        if "{" + name + "}" in path:
            names.append(name)
            rule = rule.replace("{" + name + "}", f"<{converter}:{name}>")
    if "{" in rule:
        raise ValueError(f"{path}: declare its path parameters in PATH_PARAMS")
    return names, rule


def document(
    method: str,
    path: str,
    *,
    summary: str,
    responses: dict[int, type[BaseModel]],
    errors: Iterable[int] = (),
    body: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    headers: Iterable[Parameter] = (),
    auth: bool = True,
    description: str | None = None,
) -> Callable[[View], View]:
    """Record an operation for the OpenAPI document (without routing it)."""

    def decorate(view: View) -> View:
        names, _rule = _path_params(path)
        statuses: dict[int, type[BaseModel] | None] = dict(responses)
        implied = [401] if auth else []
        if body is not None:
            implied += [400, 413, 415]
        if query is not None or "account_id" in names:
            implied.append(400)
        if names:
            implied.append(404)
        for status in (*implied, *errors):
            statuses.setdefault(status, None)
        parameters = (
            *(Parameter(n, "path", PATH_PARAMS[n][1]) for n in names),
            *(openapi.query_parameters(query) if query is not None else ()),
            *headers,
        )
        OPERATIONS.append(
            Operation(
                method=method.lower(),
                path=path,
                operation_id=view.__name__,
                summary=summary,
                responses=statuses,
                body=body,
                parameters=parameters,
                auth=auth,
                description=description,
                tags=("webhooks",) if not path.startswith(PREFIX) else ("integrator API",),
            )
        )
        return view

    return decorate


def route(
    method: str,
    path: str,
    *,
    summary: str,
    responses: dict[int, type[BaseModel]],
    errors: Iterable[int] = (),
    body: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    auth: bool = True,
    description: str | None = None,
) -> Callable[[View], View]:
    """Route `path` (relative to /api/v1) on the blueprint and document it."""
    status_of = {model: status for status, model in responses.items()}

    def decorate(view: View) -> View:
        document(
            method,
            PREFIX + path,
            summary=summary,
            responses=responses,
            errors=errors,
            body=body,
            query=query,
            auth=auth,
            description=description,
        )(view)
        _names, rule = _path_params(path)

        def endpoint(**path_args: Any) -> Response:
            if auth:
                authenticate()
            kwargs = dict(path_args)
            if "account_id" in kwargs:
                kwargs["account_id"] = validate_account_id(kwargs["account_id"])
            if query is not None:
                kwargs["query"] = parse_query(query)
            if body is not None:
                kwargs["body"] = parse_body(body)
            result = view(**kwargs)
            if isinstance(result, Response):
                return result
            status = status_of.get(type(result))
            if status is None:  # a view answering something its route does not document
                raise TypeError(f"{view.__name__} returned an undeclared {type(result).__name__}")
            return json_response(result, status)

        endpoint.__name__ = view.__name__
        endpoint.__doc__ = view.__doc__
        bp.add_url_rule(rule, view_func=endpoint, methods=[method])
        return view

    return decorate


# Parsing and serializing -----------------------------------------------------------------


def authenticate() -> None:
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("send the API key as 'Authorization: Bearer <key>'")
    presented = key.strip().encode()
    # Compare with every key (no early exit), each in constant time.
    matched = False
    for known in services().settings.API_KEYS:
        matched |= hmac.compare_digest(presented, known.encode())
    if not matched:
        raise Unauthorized("unknown API key")


def parse_body(model: type[BaseModel]) -> Any:
    if request.mimetype != "application/json":
        raise UnsupportedMediaType("Content-Type must be application/json")
    raw = request.get_data(cache=False)  # over MAX_CONTENT_LENGTH: 413 before reading it
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise validation_failed(exc) from None


def parse_query(model: type[BaseModel]) -> Any:
    for name in request.args:
        if len(request.args.getlist(name)) > 1:
            raise ValidationFailed(f"{name}: give it at most once", field=name)
    try:
        return model.model_validate(request.args.to_dict())
    except ValidationError as exc:
        raise validation_failed(exc, unknown="unknown parameter") from None


def validation_failed(exc: ValidationError, *, unknown: str = "unknown field") -> ValidationFailed:
    """One 400 naming the first offending field, with every problem in the message."""
    errors = exc.errors(include_url=False, include_input=False)
    parts = []
    for error in errors[:5]:
        where = ".".join(str(part) for part in error["loc"])
        text = _error_text(error, unknown)
        parts.append(f"{where}: {text}" if where else text)
    first = ".".join(str(part) for part in errors[0]["loc"]) if errors else ""
    return ValidationFailed("; ".join(parts) or "invalid request", field=first or None)


def _error_text(error: ErrorDetails, unknown: str) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return unknown
    if kind == "missing":
        return "is required"
    if kind == "json_invalid":
        return "body is not valid JSON"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "body must be a JSON object"
    if kind == "value_error":
        return str(error.get("ctx", {}).get("error", error["msg"]))
    return error["msg"]


def json_response(model: BaseModel, status: int = 200) -> Response:
    response = Response(model.model_dump_json(), status=status, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"  # connect tokens, account data
    return response


def connection_out(connection: Connection, counts: dict[str, int]) -> ConnectionOut:
    return ConnectionOut(
        account_id=connection.account_id,
        status=ConnectionStatus(connection.status).value,
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


def link_out(link: SyncedLink) -> LinkOut:
    return LinkOut(
        source_id=link.source_id,
        name=link.name,
        url=link.url,
        state=link.state,  # type: ignore[arg-type]  # a LinkState value
        close_link_id=link.close_link_id,
        last_error=link.last_error,
        last_synced_at=link.last_synced_at,
    )


# Routes ---------------------------------------------------------------------------------


@route(
    "POST",
    "/connect-sessions",
    summary="Create a connect session: a short-lived link for one account's admin",
    body=ConnectSessionIn,
    responses={201: ConnectSessionOut},
)
def create_session(body: ConnectSessionIn) -> ConnectSessionOut:
    session = db_session()
    connect, token, url = create_connect_session(
        session, services().settings, body.account_id, body.return_url
    )
    session.commit()
    return ConnectSessionOut(token=token, connect_url=url, expires_at=connect.expires_at)


@route(
    "GET",
    "/accounts/{account_id}/connection",
    summary="Connection status, Close user and organization, link counts, last sync",
    responses={200: ConnectionOut},
)
def get_status(account_id: str) -> ConnectionOut:
    session = db_session()
    connection = get_connection(session, account_id)
    return connection_out(connection, queries.link_counts(session, connection.id))


@route(
    "GET",
    "/accounts/{account_id}/links",
    summary="The account's synced links with their state and last error, in pages",
    query=LinksQuery,
    responses={200: LinkPage},
)
def list_links(account_id: str, query: LinksQuery) -> LinkPage:
    session = db_session()
    connection = get_connection(session, account_id)
    rows, next_id = queries.links_page(
        session, connection.id, after_id=int(query.cursor), limit=query.limit
    )
    return LinkPage(
        data=[link_out(row) for row in rows],
        next_cursor=str(next_id) if next_id is not None else None,
    )


@route(
    "POST",
    "/accounts/{account_id}/sync",
    summary="Queue a resync now; poll the run with GET /api/v1/sync-runs/{id}",
    responses={202: SyncQueued},
    errors=(409,),
)
def trigger_sync(account_id: str) -> SyncQueued:
    session = db_session()
    connection = get_connection(session, account_id)
    if connection.status != ConnectionStatus.ACTIVE:
        raise Conflict(f"the connection is {connection.status}, not active; it cannot sync")
    run = request_sync(session, services(), connection, Trigger.MANUAL)
    session.commit()  # the enqueue fires after this commit
    return SyncQueued(run_id=run.id, status="queued")


@route(
    "GET",
    "/sync-runs/{run_id}",
    summary="One sync run: trigger, timing, counts, progress, error",
    responses={200: SyncRunOut},
)
def get_run(run_id: int) -> SyncRunOut:
    run, account_id = queries.sync_run(db_session(), run_id)
    duration = (
        (run.finished_at - run.started_at).total_seconds()
        if run.finished_at and run.started_at
        else None
    )
    return SyncRunOut(
        id=run.id,
        account_id=account_id,
        trigger=run.trigger,
        status=run.status,  # type: ignore[arg-type]  # a RunStatus value
        queued_at=run.queued_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
        duration_seconds=duration,
        counts=RunCounts(
            created=run.created,
            updated=run.updated,
            deleted=run.deleted,
            unchanged=run.unchanged,
            failed=run.failed,
        ),
        progress=RunProgress(done=run.progress_done, total=run.progress_total),
        error=run.error,
    )


@route(
    "DELETE",
    "/accounts/{account_id}/connection",
    summary="Disconnect: remove our links from Close (unless keep_links), revoke, wipe tokens",
    description="Idempotent. The connection stays as a record with status disconnected.",
    query=DisconnectQuery,
    responses={200: ConnectionOut},
    errors=(409, 503),
)
def delete_connection(account_id: str, query: DisconnectQuery) -> ConnectionOut:
    session = db_session()
    connection_id = get_connection(session, account_id).id
    # Calling Close can take a while: hold no transaction or pooled connection meanwhile.
    session.close()
    connection = disconnect(services(), connection_id, keep_links=query.keep_links in ("true", "1"))
    return connection_out(connection, queries.link_counts(session, connection.id))


@route(
    "GET",
    "/openapi.json",
    summary="This document (OpenAPI 3.1), generated from the code",
    responses={200: OpenAPIDocument},
    auth=False,
)
def openapi_document() -> Response:
    return Response(_document_json(), mimetype="application/json")


@functools.cache
def _document_json() -> str:
    import service.api.webhooks  # noqa: F401 - registers the webhook operation

    return OpenAPIDocument.model_validate(openapi.build(OPERATIONS)).model_dump_json()
