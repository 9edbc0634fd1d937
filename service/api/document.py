"""GET /api/v1/openapi.json: the OpenAPI document, built from every registered operation."""

from __future__ import annotations

import functools

from flask import Response

from service.api import events, openapi, routes, webhooks
from service.api.routing import OPERATIONS, route
from service.api.schemas import OpenAPIDocument

# The modules whose operations the document describes (imported for their registrations).
DOCUMENTED = (routes, webhooks, events)


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
    return OpenAPIDocument.model_validate(openapi.build(OPERATIONS)).model_dump_json()
