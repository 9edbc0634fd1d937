"""The integrator API's route registry (/api/v1): routing, parsing, serializing, documenting.

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

import hmac
from collections.abc import Callable, Iterable
from typing import Any

from flask import Blueprint, Response, request
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from service.api import openapi
from service.api.openapi import Operation, Parameter
from service.api.schemas import ACCOUNT_ID_SCHEMA, CONNECT_TOKEN_SCHEMA, RUN_ID_MAX
from service.connections.sessions import validate_account_id
from service.errors import Unauthorized, UnsupportedMediaType, ValidationFailed
from service.web.context import services

PREFIX = "/api/v1"
bp = Blueprint("api_views", __name__, url_prefix=PREFIX)

OPERATIONS: list[Operation] = []

# Path parameters: the Flask converter that matches them and their documented schema. An
# integer out of range does not match, so it is a JSON 404 like any unknown path.
PATH_PARAMS: dict[str, tuple[str, dict[str, Any]]] = {
    "account_id": ("string", ACCOUNT_ID_SCHEMA),
    "token": ("string(maxlength=200)", CONNECT_TOKEN_SCHEMA),
    "member_id": ("string", ACCOUNT_ID_SCHEMA),
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
    responses: dict[int, type[BaseModel] | None],
    errors: Iterable[int] = (),
    body: type[BaseModel] | None = None,
    body_required: bool = True,
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
                body_required=body_required,
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
    responses: dict[int, type[BaseModel] | None],
    errors: Iterable[int] = (),
    body: type[BaseModel] | None = None,
    body_required: bool = True,
    query: type[BaseModel] | None = None,
    auth: bool = True,
    description: str | None = None,
) -> Callable[[View], View]:
    """Route `path` (relative to /api/v1) on the blueprint and document it. A success status
    mapped to None (204) has no body: the view returns a Response. With
    `body_required=False` an empty body (with any Content-Type, or none) gives the view
    `body=None`; a body that is present is parsed and checked as usual."""
    status_of = {model: status for status, model in responses.items() if model is not None}

    def decorate(view: View) -> View:
        document(
            method,
            PREFIX + path,
            summary=summary,
            responses=responses,
            errors=errors,
            body=body,
            body_required=body_required,
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
            if "member_id" in kwargs:
                kwargs["member_id"] = validate_account_id(kwargs["member_id"], "member_id")
            if query is not None:
                kwargs["query"] = parse_query(query)
            if body is not None:
                empty = not body_required and not request.get_data(cache=True).strip()
                kwargs["body"] = None if empty else parse_body(body)
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
    raw = request.get_data(cache=True)  # over MAX_CONTENT_LENGTH: 413 before reading it
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
