"""The OpenAPI 3.1 document, generated from the routes registered in service/api/views.py and
the pydantic models in service/api/schemas.py."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from service.api.schemas import ErrorOut, WebhookIn, WebhookOut


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    responses: dict[int, type[BaseModel] | None]
    body: type[BaseModel] | None = None
    query: list[dict[str, Any]] = field(default_factory=list)
    auth: bool = True
    operation_id: str = ""


_OPERATIONS: list[Operation] = []

ERROR_TEXT = {
    400: "Invalid request (the error names the field)",
    401: "Missing or wrong credentials",
    404: "Not found",
    409: "Conflict with the connection's state",
    413: "Body too large",
    415: "Wrong content type",
    429: "Too many requests",
    503: "Close could not be reached",
}

PATH_PARAMS = {
    "account_id": {
        "type": "string",
        "minLength": 1,
        "maxLength": 255,
        "pattern": r"^[^/\\\x00-\x1f]+$",
    },
    "run_id": {"type": "integer", "minimum": 1},
}


def register(operation: Operation) -> None:
    _OPERATIONS.append(operation)


def _schema(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in schema.pop("$defs", {}).items():
        components[name] = definition
    components[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _operation(op: Operation, components: dict[str, Any]) -> dict[str, Any]:
    params = [
        {"name": name, "in": "path", "required": True, "schema": PATH_PARAMS[name]}
        for name in re.findall(r"{(\w+)}", op.path)
    ] + [{"in": "query", "required": False, **q} for q in op.query]
    responses: dict[str, Any] = {}
    for status, model in sorted(op.responses.items()):
        if model is None:
            responses[str(status)] = {
                "description": ERROR_TEXT.get(status, "Error"),
                "content": {"application/json": {"schema": _schema(ErrorOut, components)}},
            }
        else:
            responses[str(status)] = {
                "description": op.summary,
                "content": {"application/json": {"schema": _schema(model, components)}},
            }
    result: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "parameters": params,
        "responses": responses,
    }
    if op.body is not None:
        result["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _schema(op.body, components)}},
        }
    result["security"] = [{"apiKey": []}] if op.auth else []
    return result


def document() -> dict[str, Any]:
    components: dict[str, Any] = {}
    paths: dict[str, dict[str, Any]] = {}
    for op in _OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op, components)
    paths["/webhooks/source"] = {
        "post": {
            "operationId": "receive_webhook",
            "summary": "Event types changed for an account: resync it in the background",
            "parameters": [
                {
                    "name": "X-LinkSync-Signature",
                    "in": "header",
                    "required": True,
                    "description": 't=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">',
                    "schema": {"type": "string", "maxLength": 2048},
                }
            ],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _schema(WebhookIn, components)}},
            },
            "responses": {
                "202": {
                    "description": "Accepted (or a duplicate id, ignored)",
                    "content": {"application/json": {"schema": _schema(WebhookOut, components)}},
                },
                **{
                    str(status): {
                        "description": ERROR_TEXT[status],
                        "content": {"application/json": {"schema": _schema(ErrorOut, components)}},
                    }
                    for status in (400, 401, 404, 409, 413, 415, 429)
                },
            },
            "security": [],
        }
    }
    paths["/api/v1/openapi.json"] = {
        "get": {
            "operationId": "openapi_document",
            "summary": "This document",
            "responses": {"200": {"description": "The OpenAPI document"}},
            "security": [],
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "LinkSync for Close: integrator API",
            "version": "1.0.0",
            "description": "Connect sessions, connection status, synced links, sync runs, and "
            'the signed webhook. Errors are {"error": {"code", "message", "field"?}}.',
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
    }
