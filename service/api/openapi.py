"""Builds the OpenAPI 3.1 document from the operations the routes registered (service/api/views.py
`route` / `document`) and the pydantic models of service/api/schemas.py. Pure: no Flask here."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from service.api.schemas import ErrorOut

# The error answers, each a reusable component; every one has the body ErrorOut.
ERRORS: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "Invalid request; `error.field` names the offending field"),
    401: ("Unauthorized", "Missing or wrong credentials (API key, or webhook signature)"),
    404: ("NotFound", "No such account connection, sync run or path"),
    405: ("MethodNotAllowed", "Method not allowed here; see the Allow header"),
    409: ("Conflict", "The connection's status does not allow this; the message names it"),
    413: ("PayloadTooLarge", "Body too large"),
    415: ("UnsupportedMediaType", "Content-Type must be application/json"),
    429: ("TooManyRequests", "Too many requests; retry after Retry-After seconds"),
    503: ("UpstreamUnavailable", "Close could not be reached; nothing was changed"),
}


@dataclass(frozen=True)
class Parameter:
    name: str
    location: Literal["path", "query", "header"]
    schema: Mapping[str, Any]
    required: bool = True
    description: str | None = None

    def as_dict(self) -> dict[str, Any]:
        param: dict[str, Any] = {
            "name": self.name,
            "in": self.location,
            "required": self.required,
            "schema": dict(self.schema),
        }
        if self.description:
            param["description"] = self.description
        return param


@dataclass(frozen=True)
class Operation:
    """One documented HTTP operation. `responses` maps each status to its body model; a status
    mapped to None is an error answer (ErrorOut)."""

    method: str
    path: str  # an OpenAPI path template: /api/v1/accounts/{account_id}/links
    operation_id: str
    summary: str
    responses: Mapping[int, type[BaseModel] | None]
    body: type[BaseModel] | None = None
    body_required: bool = True
    parameters: tuple[Parameter, ...] = ()
    auth: bool = True
    description: str | None = None
    tags: tuple[str, ...] = field(default=())


def query_parameters(model: type[BaseModel]) -> tuple[Parameter, ...]:
    """Query parameters described by a flat pydantic model (its fields, with their rules)."""
    schema = model.model_json_schema()
    required = set(schema.get("required", ()))
    params = []
    for name, prop in schema.get("properties", {}).items():
        prop = {k: v for k, v in prop.items() if k not in ("title", "description")}
        described = model.model_fields[name].description
        params.append(Parameter(name, "query", prop, name in required, described))
    return tuple(params)


class _Components:
    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}

    def ref(
        self, model: type[BaseModel], mode: Literal["validation", "serialization"]
    ) -> dict[str, Any]:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode=mode)
        for name, definition in schema.pop("$defs", {}).items():
            self._add(name, definition)
        self._add(model.__name__, schema)
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    def _add(self, name: str, schema: dict[str, Any]) -> None:
        known = self.schemas.setdefault(name, schema)
        if known != schema:  # two models of one name, or one model read two ways
            raise ValueError(f"conflicting OpenAPI schemas for component {name!r}")


def _operation(op: Operation, components: _Components) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, model in sorted(op.responses.items()):
        if model is None and status < 300:  # a success without a body (204)
            responses[str(status)] = {"description": op.summary}
        elif model is None:
            responses[str(status)] = {"$ref": f"#/components/responses/{ERRORS[status][0]}"}
        else:
            responses[str(status)] = {
                "description": op.summary,
                "content": {"application/json": {"schema": components.ref(model, "serialization")}},
            }
    result: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "parameters": [p.as_dict() for p in op.parameters],
        "responses": responses,
        "security": [{"apiKey": []}] if op.auth else [],
    }
    if op.description:
        result["description"] = op.description
    if op.tags:
        result["tags"] = list(op.tags)
    if op.body is not None:
        result["requestBody"] = {
            "required": op.body_required,
            "content": {"application/json": {"schema": components.ref(op.body, "validation")}},
        }
    return result


def build(operations: Iterable[Operation]) -> dict[str, Any]:
    components = _Components()
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        methods = paths.setdefault(op.path, {})
        if op.method in methods:
            raise ValueError(f"{op.method.upper()} {op.path} is registered twice")
        methods[op.method] = _operation(op, components)
    error_ref = components.ref(ErrorOut, "serialization")
    responses: dict[str, Any] = {}
    for status, (name, description) in ERRORS.items():
        responses[name] = {
            "description": description,
            "content": {"application/json": {"schema": error_ref}},
        }
        if status == 429:
            responses[name]["headers"] = {
                "Retry-After": {
                    "description": "Seconds to wait",
                    "schema": {"type": "integer", "minimum": 1},
                }
            }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "LinkSync for Close: integrator API",
            "version": "1.0.0",
            "description": (
                "Connect sessions, connection status, synced links, sync runs, disconnect, and "
                "the signed webhook. Calls under /api/v1 need `Authorization: Bearer <API key>`. "
                'Every error is JSON: {"error": {"code", "message", "field"?}}.'
            ),
        },
        "paths": paths,
        "components": {
            "schemas": dict(sorted(components.schemas.items())),
            "responses": responses,
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "One of the API_KEYS",
                }
            },
        },
    }
