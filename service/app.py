"""The Flask application factory. Importing this module does no I/O."""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

from flask import Flask, Response, g, jsonify, render_template, request
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException

from service import logs
from service.container import Enqueue, Services
from service.errors import DomainError
from service.extensions import close_db_session
from service.settings import Settings, load_settings

log = logging.getLogger(__name__)

JSON_PREFIXES = ("/api/", "/webhooks/", "/healthz", "/readyz", "/metrics", "/_")

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self' {close}; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)


def create_app(
    settings: Settings | None = None,
    *,
    services: Services | None = None,
    enqueue: Enqueue | None = None,
) -> Flask:
    settings = settings or load_settings()
    app = Flask(__name__, template_folder="web/templates", static_folder="web/static")
    app.config.update(
        SECRET_KEY=settings.SECRET_KEY,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.secure_cookies,
        SESSION_COOKIE_NAME="linksync_session",
        WTF_CSRF_TIME_LIMIT=None,  # bound to the session instead of a clock
        WTF_CSRF_SSL_STRICT=False,
        MAX_CONTENT_LENGTH=max(settings.WEBHOOK_MAX_BODY_BYTES, 64 * 1024),
        JSON_SORT_KEYS=False,
    )
    svc = services or Services(settings)
    if enqueue is not None:
        svc.enqueue = enqueue
    if svc.enqueue is None:
        from workers.celery_app import celery_enqueue

        svc.enqueue = celery_enqueue(settings)
    app.extensions["linksync"] = svc

    from service.api.views import bp as api_bp
    from service.api.webhooks import bp as webhooks_bp
    from service.ops import bp as ops_bp
    from service.web.admin import bp as admin_bp
    from service.web.views import bp as web_bp

    csrf = CSRFProtect(app)
    csrf.exempt(api_bp)
    csrf.exempt(webhooks_bp)
    csrf.exempt(ops_bp)

    app.register_blueprint(ops_bp)
    app.register_blueprint(api_bp)
    app.register_blueprint(webhooks_bp)
    app.register_blueprint(web_bp)
    app.register_blueprint(admin_bp)

    close_origin = _origin(settings.close_url("CLOSE_AUTHORIZE_URL"))
    app.teardown_appcontext(close_db_session)

    @app.before_request
    def _bind_request() -> None:
        logs.clear()
        g.request_id = request.headers.get("X-Request-Id", "")[:64] or secrets.token_hex(8)
        g.started = time.perf_counter()
        logs.bind(request_id=g.request_id, path=request.path)

    @app.after_request
    def _headers(response: Response) -> Response:
        response.headers.setdefault("X-Request-Id", g.get("request_id", ""))
        if "started" in g:
            # Time spent in the app, for clients and load tests (W3C Server-Timing).
            response.headers["Server-Timing"] = (
                f"app;dur={(time.perf_counter() - g.started) * 1000:.2f}"
            )
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        if response.mimetype == "text/html":
            response.headers.setdefault("Content-Security-Policy", CSP.format(close=close_origin))
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.errorhandler(DomainError)
    def _domain_error(exc: DomainError) -> tuple[Any, int]:
        return _error_response(exc.status, exc.code, exc.message, exc.field)

    @app.errorhandler(CSRFError)
    def _csrf_error(exc: CSRFError) -> tuple[Any, int]:
        return _error_response(
            400,
            "csrf_failed",
            "This form expired or did not come from this site. Reload the page and try again.",
        )

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Any:
        code = (exc.name or "error").lower().replace(" ", "_")
        body, status = _error_response(
            exc.code or 500, code, exc.description or exc.name or "error"
        )
        response = app.make_response((body, status))
        # Keep the exception's own headers (e.g. Allow on 405, as RFC 9110 requires).
        for name, value in exc.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Any, int]:
        log.exception("unhandled error")
        return _error_response(500, "internal_error", "Something went wrong on our side.")

    return app


def _wants_json() -> bool:
    return (
        request.path.startswith(JSON_PREFIXES)
        or request.accept_mimetypes.best == "application/json"
    )


def _error_response(
    status: int, code: str, message: str, field: str | None = None
) -> tuple[Any, int]:
    if _wants_json():
        body: dict[str, Any] = {"error": {"code": code, "message": message}}
        if field:
            body["error"]["field"] = field
        return jsonify(body), status
    return render_template("error.html", status=status, message=message, code=code), status


def _origin(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
