"""The Flask application factory. Importing this module does no I/O."""

from __future__ import annotations

import logging
import time

from flask import Flask, Response, g, request
from flask_wtf.csrf import CSRFError, CSRFProtect
from sqlalchemy.exc import DisconnectionError, OperationalError
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from service.api.webhooks import WebhookEndpoint
from service.errors import DatabaseUnavailable, DomainError
from service.infra import logs
from service.jobs import Enqueue, celery_enqueue
from service.services import Services
from service.settings import Settings, load_settings
from service.web.context import close_db_session
from service.web.errors import csrf_failure_message, error_response, http_error_response
from service.web.headers import RequestIds, security_headers

log = logging.getLogger(__name__)

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self' {close}; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)

WIDGET_SCRIPT = "/static/connect.js"
WIDGET_MAX_AGE = 86400


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
        svc.enqueue = celery_enqueue(settings)
    app.extensions["linksync"] = svc
    request_ids = RequestIds()
    # The webhook endpoint answers in front of Flask (service.api.webhooks: its hot path
    # needs no request context, session or hooks); inside the proxy fix, which sees first.
    app.wsgi_app = WebhookEndpoint(app.wsgi_app, svc, request_ids)  # type: ignore[method-assign]
    if settings.TRUSTED_PROXY_COUNT:
        # Behind N trusted proxies: remote_addr is the client (the sign-in throttle counts per
        # client), and scheme/host are what the browser used.
        n = settings.TRUSTED_PROXY_COUNT
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=n, x_proto=n, x_host=n
        )

    from service.api import document  # noqa: F401 - registers GET /api/v1/openapi.json
    from service.api.routing import bp as api_bp
    from service.web.admin import events as _admin_events  # noqa: F401 - routes on admin_bp
    from service.web.admin.pages import bp as admin_bp
    from service.web.ops import bp as ops_bp
    from service.web.views import bp as web_bp

    csrf = CSRFProtect(app)
    csrf.exempt(api_bp)
    csrf.exempt(ops_bp)

    app.register_blueprint(ops_bp)
    app.register_blueprint(api_bp)
    app.register_blueprint(web_bp)
    app.register_blueprint(admin_bp)

    close_origin = _origin(settings.close_url("CLOSE_AUTHORIZE_URL"))
    app.teardown_appcontext(close_db_session)

    @app.before_request
    def _bind_request() -> None:
        logs.clear()
        g.request_id = request_ids(request.headers.get("X-Request-Id"))
        g.started = time.perf_counter()
        logs.bind(request_id=g.request_id, path=request.path)

    standard = security_headers(https=settings.https)

    @app.after_request
    def _headers(response: Response) -> Response:
        response.headers.setdefault("X-Request-Id", g.get("request_id", ""))
        if "started" in g:
            # Time spent in the app, for clients and load tests (W3C Server-Timing).
            response.headers["Server-Timing"] = (
                f"app;dur={(time.perf_counter() - g.started) * 1000:.2f}"
            )
        for name, value in standard:
            response.headers.setdefault(name, value)
        if request.path == WIDGET_SCRIPT and response.status_code in (200, 304):
            # Integrators' pages load the widget from here: let browsers and CDNs keep it
            # for a day (revalidated by ETag after that).
            response.cache_control.public = True
            response.cache_control.max_age = WIDGET_MAX_AGE
        if response.mimetype == "text/html":
            response.headers.setdefault("Content-Security-Policy", CSP.format(close=close_origin))
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.errorhandler(DomainError)
    def _domain_error(exc: DomainError) -> Response:
        return error_response(exc.status, exc.code, exc.message, field=exc.field)

    @app.errorhandler(OperationalError)
    @app.errorhandler(DisconnectionError)
    def _database_unavailable(exc: Exception) -> Response:
        # The database went away (restart, failover, terminated backends): a 503 the client
        # may retry, not a 500. The pool (pool_pre_ping) reconnects on the next request.
        log.warning("database unavailable", extra={"error": type(exc).__name__})
        error = DatabaseUnavailable()
        return _retry_later(_domain_error(error))

    @app.errorhandler(CSRFError)
    def _csrf_error(exc: CSRFError) -> Response:
        return error_response(
            400,
            "csrf_failed",
            csrf_failure_message(
                "This form expired or did not come from this site. Reload the page and try again."
            ),
        )

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        return http_error_response(exc)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "Something went wrong on our side.")

    return app


def _retry_later(response: Response) -> Response:
    response.headers["Retry-After"] = "5"
    return response


def _origin(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
