"""One error renderer for the whole app: JSON for API clients, a friendly page for people.

Every error handler (the app's and the operator console's) answers through `error_response`,
so the JSON shape is the same everywhere, `field` is named when known, the exception's own
headers survive (Allow on 405), and a page never shows a stack trace.
"""

from __future__ import annotations

from collections.abc import Mapping

from flask import Response, current_app, jsonify, render_template, request
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES

JSON_PREFIXES = ("/api/", "/webhooks/", "/healthz", "/readyz", "/metrics", "/_", "/admin/api/")


def wants_json() -> bool:
    return (
        request.path.startswith(JSON_PREFIXES)
        or request.accept_mimetypes.best == "application/json"
    )


def error_body(code: str, message: str, field: str | None = None) -> dict[str, object]:
    """The inside of every JSON error answer: {"error": {"code", "message"[, "field"]}}."""
    body: dict[str, object] = {"code": code, "message": message}
    if field:
        body["field"] = field
    return body


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    field: str | None = None,
    template: str = "error.html",
    title: str | None = None,
    context: Mapping[str, object] | None = None,
) -> Response:
    if wants_json():
        response = jsonify(error=error_body(code, message, field))
        response.status_code = status
        return response
    page = render_template(
        template,
        status=status,
        code=code,
        message=message,
        title=title or HTTP_STATUS_CODES.get(status, "Error"),
        **(context or {}),
    )
    return Response(page, status, mimetype="text/html")


def http_error_response(exc: HTTPException, *, template: str = "error.html") -> Response:
    """A werkzeug HTTP error (404, 405, 413...) through the same renderer, keeping its headers."""
    code = (exc.name or "error").lower().replace(" ", "_")
    response = error_response(
        exc.code or 500,
        code,
        exc.description or exc.name or "error",
        template=template,
        title=exc.name,
    )
    for name, value in exc.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


NO_SESSION_COOKIE = (
    "Your browser did not send the session cookie: is PUBLIC_URL https while you use http? "
    "(Secure cookies only come back over https.) Reload the page at its PUBLIC_URL address, "
    "with cookies enabled, and try again."
)


def csrf_failure_message(usual: str) -> str:
    """Why a form was refused. Without the session cookie no CSRF token can match, and the
    usual cause is a Secure cookie dropped over http: say so instead of "the form expired"."""
    if current_app.config["SESSION_COOKIE_NAME"] not in request.cookies:
        return NO_SESSION_COOKIE
    return usual
