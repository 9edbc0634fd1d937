"""The operator console at /admin: fleet activity, connections, runs, per-link errors, failures.

Server-rendered with the templates under admin/ (self-contained: their own layout and error
page). Every page but the sign-in needs an operator session; every form carries a CSRF token
(Flask-WTF's CSRFProtect, enabled for the whole app). The read queries are those of
service.connections.queries; the buttons go through `request_sync`, like the API does.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Response,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.sansio.blueprints import BlueprintSetupState
from flask_wtf.csrf import CSRFError
from sqlalchemy.orm import Session
from werkzeug.exceptions import HTTPException

from service.connections import queries
from service.errors import DomainError, ValidationFailed
from service.infra.db import utcnow
from service.infra.models import Connection, ConnectionStatus, Trigger
from service.sync.coverage import NOT_SYNCED_YET
from service.sync.triggers import request_sync
from service.web.admin import presentation
from service.web.admin.auth import (
    SESSION_LIFETIME,
    LoginThrottle,
    Throttled,
    authenticate,
    console_enabled,
    current_operator,
    end_session,
    login_required,
    start_session,
)
from service.web.context import db_session, services
from service.web.errors import csrf_failure_message, error_response, http_error_response

log = logging.getLogger(__name__)

bp = Blueprint("web_admin", __name__, url_prefix="/admin")

CONNECTIONS_PER_PAGE = 50
LINKS_PER_PAGE = 100
FAILURES_PER_PAGE = 25
RECENT_RUNS = 20
MAX_PAGE = 10_000
MAX_RUN_IDS = 50
DB_INT_MAX = 2**31 - 1  # ids are 32-bit integers on PostgreSQL
# A bounded converter: an id the database cannot hold is simply no such page (404), instead of
# an out-of-range error from PostgreSQL (a 500).
CONNECTION_ID = f"int(min=1, max={DB_INT_MAX})"

DISABLED_MESSAGE = (
    "The operator console is disabled. To enable it, set OPERATOR_USERNAME and "
    "OPERATOR_PASSWORD_HASH (print a hash with: linksync operator hash-password) and restart."
)


@bp.record_once
def _session_lifetime(state: BlueprintSetupState) -> None:
    # Only the operator session is permanent (the connect pages' binding lives for the browser
    # session), so this sets the operator cookie's lifetime; the login also stores a deadline
    # that is checked on every request, in case a cookie outlives it.
    state.app.config["PERMANENT_SESSION_LIFETIME"] = SESSION_LIFETIME


# Access --------------------------------------------------------------------------------


@bp.before_request
def _require_enabled() -> Response | None:
    if console_enabled(services().settings):
        return None
    return _error(404, "not_found", DISABLED_MESSAGE, "Operator console disabled")


def _safe_next(target: str | None) -> str:
    """Only a path inside the console: never another host (no open redirect)."""
    fallback = url_for("web_admin.dashboard")
    if not target or "\\" in target or any(ord(ch) < 32 for ch in target):
        return fallback
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or target.startswith("//"):
        return fallback
    if not (parts.path == "/admin" or parts.path.startswith("/admin/")):
        return fallback
    return target


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    settings = services().settings
    target = _safe_next(request.args.get("next"))
    if request.method == "GET":
        if current_operator() is not None:
            return redirect(target)
        return render_template("admin/login.html", error=None, next=target)

    username = request.form.get("username", "")[:128]
    password = request.form.get("password", "")[:1024]
    client = request.remote_addr or "unknown"
    coordinator = services().coordinator
    throttle = LoginThrottle(coordinator)
    attempt = throttle.begin(username, client)
    if isinstance(attempt, Throttled):
        log.warning(
            "operator sign-in throttled", extra={"client": client, "scope": attempt.scope.name}
        )
        return _throttled(attempt.retry_after)

    if not authenticate(settings, username, password):
        wait = throttle.failed(attempt)
        log.warning(
            "operator sign-in failed",
            extra={
                "client": client,
                "known_user": username == settings.OPERATOR_USERNAME,
                "wait_seconds": wait,
            },
        )
        error = "Wrong username or password."
        if wait:
            error += f" Wait {_duration(wait)} before the next try."
        return render_template("admin/login.html", error=error, next=target), 401

    throttle.succeeded(attempt)
    start_session(settings, coordinator, username)
    log.info("operator signed in", extra={"client": client})
    return redirect(target, code=303)


def _duration(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    return f"{round(seconds / 60)} minutes"


def _throttled(retry_after: int) -> Response:
    body = render_template(
        "admin/error.html",
        status=429,
        title="Too many sign-in attempts",
        message=(
            "Too many failed sign-ins. "
            f"Wait {_duration(retry_after)} and try again; each further failure doubles the wait."
        ),
    )
    return Response(body, 429, headers={"Retry-After": str(retry_after)})


@bp.post("/logout")
def logout() -> Any:
    end_session(services().coordinator)
    return redirect(url_for("web_admin.login"), code=303)


# Pages ---------------------------------------------------------------------------------


def _page_arg(name: str = "page") -> int:
    return max(1, min(request.args.get(name, 1, type=int) or 1, MAX_PAGE))


@bp.get("/")
@login_required
def dashboard() -> Any:
    db = db_session()
    return render_template(
        "admin/dashboard.html",
        activity=queries.fleet_activity(db, utcnow()),
        latest_failures=db.execute(queries.failed_runs().limit(5)).all(),
    )


@bp.get("/api/activity.json")
@login_required
def activity() -> Response:
    return jsonify(queries.fleet_activity(db_session(), utcnow()))


@bp.get("/api/runs.json")
@login_required
def runs_json() -> Response:
    """Status and progress of the given runs (the connection page follows its active runs)."""
    ids = _run_ids(request.args.get("ids", ""))
    return jsonify(runs=[queries.run_json(run) for run in queries.runs_by_id(db_session(), ids)])


def _run_ids(text: str) -> list[int]:
    """A comma-separated list of run ids (empty items ignored). Only ASCII digits inside the
    database's integer range: `str.isdigit()` also accepts "²", which int() then refuses."""
    ids = []
    for part in text.split(",")[:MAX_RUN_IDS]:
        if not part:
            continue
        if not (part.isascii() and part.isdigit()) or not 1 <= int(part) <= DB_INT_MAX:
            raise ValidationFailed(
                f"ids must be comma-separated run ids from 1 to {DB_INT_MAX}", field="ids"
            )
        ids.append(int(part))
    return ids


@bp.get("/connections")
@login_required
def connections() -> Any:
    q = request.args.get("q", "").strip()[:200]
    status = request.args.get("status", "")
    if status not in {s.value for s in ConnectionStatus}:
        status = ""
    page = _page_arg()
    db = db_session()
    found, total = queries.paginate(
        db, queries.search_connections(q, status), page, CONNECTIONS_PER_PAGE
    )
    rows = [connection for (connection,) in found]
    return render_template(
        "admin/connections.html",
        rows=rows,
        counts=queries.link_counts_of(db, [c.id for c in rows]),
        total=total,
        q=q,
        status=status,
        statuses=[s.value for s in ConnectionStatus],
        page=page,
        per_page=CONNECTIONS_PER_PAGE,
    )


@bp.get(f"/connections/<{CONNECTION_ID}:connection_id>")
@login_required
def connection_detail(connection_id: int) -> Any:
    db = db_session()
    connection = queries.connection_by_id(db, connection_id)
    runs = queries.recent_runs(db, connection_id, RECENT_RUNS)
    links_page = _page_arg("links_page")
    found, links_total = queries.paginate(
        db,
        queries.links_errors_first(connection_id),
        links_page,
        LINKS_PER_PAGE,
    )
    return render_template(
        "admin/connection.html",
        connection=connection,
        runs=runs,
        links=[link for (link,) in found],
        links_total=links_total,
        links_page=links_page,
        per_page=LINKS_PER_PAGE,
        states=queries.link_counts(db, connection_id),
        can_sync=connection.syncable,
        team=_team(db, connection),
        not_synced_yet=NOT_SYNCED_YET,
    )


def _team(db: Session, connection: Connection) -> dict[str, Any] | None:
    """The team table of an admin connection with a roster (queries.coverage), else None."""
    if connection.member_id is not None:
        return None
    report = queries.coverage(db, connection.account_id)
    return report if report["members"] else None


@bp.post(f"/connections/<{CONNECTION_ID}:connection_id>/<any(resync, reconcile):action>")
@login_required
def start_run(connection_id: int, action: str) -> Any:
    db = db_session()
    connection = queries.connection_by_id(db, connection_id)
    back = url_for("web_admin.connection_detail", connection_id=connection_id)
    if not connection.syncable:
        flash(f"Not started: the connection is {connection.status}.", "error")
        return redirect(back, code=303)
    # The worker runs a "reconcile" trigger as a reconcile (it also lists Close's links).
    trigger = Trigger.RECONCILE if action == "reconcile" else Trigger.MANUAL
    run = request_sync(db, services(), connection, trigger)
    db.commit()  # enqueues the run (after the commit, so the worker finds it)
    log.info(
        "operator requested a sync",
        extra={"connection_id": connection_id, "run_id": run.id, "trigger": str(trigger)},
    )
    flash(f"{action.capitalize()} queued as run #{run.id}.", "ok")
    return redirect(back, code=303)


@bp.get("/failures")
@login_required
def failures() -> Any:
    db = db_session()
    runs_page, links_page = _page_arg("runs_page"), _page_arg("links_page")
    runs, runs_total = queries.paginate(db, queries.failed_runs(), runs_page, FAILURES_PER_PAGE)
    links, links_total = queries.paginate(
        db,
        queries.error_links(),
        links_page,
        FAILURES_PER_PAGE,
    )
    return render_template(
        "admin/failures.html",
        runs=runs,
        runs_total=runs_total,
        runs_page=runs_page,
        links=links,
        links_total=links_total,
        links_page=links_page,
        per_page=FAILURES_PER_PAGE,
    )


# Templates, errors, headers ------------------------------------------------------------


@bp.context_processor
def _template_helpers() -> dict[str, Any]:
    return {
        "operator": current_operator() if console_enabled(services().settings) else None,
        **presentation.TEMPLATE_HELPERS,
    }


def _error(status: int, code: str, message: str, title: str | None = None) -> Response:
    return error_response(status, code, message, template="admin/error.html", title=title)


@bp.errorhandler(CSRFError)
def _csrf_failed(_exc: CSRFError) -> Response:
    return _error(
        400,
        "csrf_failed",
        csrf_failure_message(
            "This form expired or did not come from this console. Go back, reload and try again."
        ),
        "Form expired",
    )


@bp.errorhandler(DomainError)
def _domain_error(exc: DomainError) -> Response:
    return error_response(
        exc.status, exc.code, exc.message, field=exc.field, template="admin/error.html"
    )


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Response:
    return http_error_response(exc, template="admin/error.html")


@bp.after_request
def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    response.headers.setdefault("X-Robots-Tag", "noindex")
    return response
