"""The operator console at /admin: fleet activity, connections, runs, per-link errors, failures.

Server-rendered with the templates under admin/ (self-contained: their own layout and error
page). Every page but the sign-in needs an operator session; every form carries a CSRF token
(Flask-WTF's CSRFProtect, enabled for the whole app). The read queries below are plain
functions of a database session; the buttons go through `request_sync`, like the API does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from functools import wraps
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Response,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sansio.blueprints import BlueprintSetupState
from flask_wtf.csrf import CSRFError
from sqlalchemy import ColumnElement, Select, func, or_, select
from sqlalchemy.orm import Session
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES

from service.db import utcnow
from service.errors import DomainError, NotFound, Unauthorized
from service.extensions import db_session, services
from service.models import (
    Connection,
    ConnectionStatus,
    LinkState,
    RunStatus,
    SyncedLink,
    SyncRun,
    Trigger,
)
from service.operators import (
    LoginThrottle,
    authenticate,
    console_enabled,
    credentials_fingerprint,
)
from service.sync.triggers import request_sync

log = logging.getLogger(__name__)

bp = Blueprint("web_admin", __name__, url_prefix="/admin")

SESSION_KEY = "operator"
SESSION_LIFETIME = timedelta(hours=8)
CONNECTIONS_PER_PAGE = 50
LINKS_PER_PAGE = 100
FAILURES_PER_PAGE = 25
RECENT_RUNS = 20
MAX_PAGE = 10_000

DISABLED_MESSAGE = (
    "The operator console is disabled. To enable it, set OPERATOR_USERNAME and "
    "OPERATOR_PASSWORD_HASH (print a hash with: linksync operator hash-password) and restart."
)

View = TypeVar("View", bound=Callable[..., Any])


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


def current_operator() -> str | None:
    """The signed-in operator's name, or None (no session, expired, or credentials changed)."""
    data = session.get(SESSION_KEY)
    if not isinstance(data, dict):
        return None
    until = data.get("until")
    if not isinstance(until, int | float) or until < time.time():
        return None
    if data.get("fp") != credentials_fingerprint(services().settings):
        return None
    return str(data.get("name", ""))


def _is_api() -> bool:
    return request.path.startswith("/admin/api/")


def login_required(view: View) -> View:
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if current_operator() is None:
            if _is_api():
                raise Unauthorized("Operator sign-in required.")
            target = request.full_path if request.method == "GET" else request.path
            return redirect(url_for("web_admin.login", next=target.rstrip("?")))
        return view(*args, **kwargs)

    return cast(View, wrapper)


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
    throttle = LoginThrottle(services().coordinator)
    attempt = throttle.begin(username, client)
    if attempt is None:
        log.warning("operator sign-in throttled", extra={"client": client})
        minutes = throttle.window // 60
        body = render_template(
            "admin/error.html",
            status=429,
            title="Too many sign-in attempts",
            message=f"Too many failed sign-ins. Wait {minutes} minutes and try again.",
        )
        return Response(body, 429, headers={"Retry-After": str(throttle.window)})

    if not authenticate(settings, username, password):
        log.warning(
            "operator sign-in failed",
            extra={"client": client, "known_user": username == settings.OPERATOR_USERNAME},
        )
        error = "Wrong username or password."
        return render_template("admin/login.html", error=error, next=target), 401

    throttle.succeeded(attempt)
    # A fresh session: nothing from before the sign-in (no fixation), a new CSRF token.
    session.clear()
    session.permanent = True
    session[SESSION_KEY] = {
        "name": username,
        "until": time.time() + SESSION_LIFETIME.total_seconds(),
        "fp": credentials_fingerprint(settings),
    }
    log.info("operator signed in", extra={"client": client})
    return redirect(target, code=303)


@bp.post("/logout")
def logout() -> Any:
    session.clear()
    return redirect(url_for("web_admin.login"), code=303)


# Queries (plain functions of a session) ------------------------------------------------


def _counts(db: Session, column: Any, *where: ColumnElement[bool]) -> dict[str, int]:
    stmt = select(column, func.count()).where(*where).group_by(column)
    return {str(key): int(n) for key, n in db.execute(stmt).all()}


def _run_json(run: SyncRun, account_id: str | None = None) -> dict[str, Any]:
    return {
        "id": run.id,
        "connection_id": run.connection_id,
        "account_id": account_id,
        "trigger": run.trigger,
        "status": run.status,
        "done": run.progress_done,
        "total": run.progress_total,
        "created": run.created,
        "updated": run.updated,
        "deleted": run.deleted,
        "unchanged": run.unchanged,
        "failed": run.failed,
        "queued_at": run.queued_at.isoformat() if run.queued_at else None,
        "started_at": run.started_at.isoformat() if run.started_at else None,
    }


def fleet_activity(db: Session, now: datetime) -> dict[str, Any]:
    """What the dashboard shows (and refreshes every 2 s): counts, runs of the last hour,
    the runs in progress with their progress, and the queue."""
    running = db.execute(
        select(SyncRun, Connection.account_id)
        .join(Connection, Connection.id == SyncRun.connection_id)
        .where(SyncRun.status == RunStatus.RUNNING)
        .order_by(SyncRun.id)
        .limit(50)
    ).all()
    queued, oldest = db.execute(
        select(func.count(), func.min(SyncRun.queued_at)).where(SyncRun.status == RunStatus.QUEUED)
    ).one()
    return {
        "connections": _counts(db, Connection.status),
        "links": _counts(db, SyncedLink.state),
        "last_hour": _counts(db, SyncRun.status, SyncRun.queued_at >= now - timedelta(hours=1)),
        "running": [_run_json(run, account) for run, account in running],
        "queued": {"count": int(queued), "oldest": oldest.isoformat() if oldest else None},
    }


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def search_connections(q: str, status: str) -> Select:
    """Connections matching a case-insensitive search (account id, Close user email, org
    name) and a status, newest first."""
    stmt = select(Connection)
    if q:
        pattern = f"%{_escape_like(q.lower())}%"
        stmt = stmt.where(
            or_(
                func.lower(Connection.account_id).like(pattern, escape="\\"),
                func.lower(Connection.close_user_email).like(pattern, escape="\\"),
                func.lower(Connection.close_org_name).like(pattern, escape="\\"),
            )
        )
    if status:
        stmt = stmt.where(Connection.status == status)
    return stmt.order_by(Connection.id.desc())


def paginate(
    db: Session, stmt: Select, page: int, per_page: int
) -> tuple[list[tuple[Any, ...]], int]:
    """One page of `stmt`'s rows and the number of all matching rows, in one query (the total
    comes from a window function, so a page costs no separate COUNT)."""
    rows = db.execute(
        stmt.add_columns(func.count().over()).offset((page - 1) * per_page).limit(per_page)
    ).all()
    total = int(rows[0][-1]) if rows else 0
    return [tuple(row[:-1]) for row in rows], total


def link_counts(db: Session, connection_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """Links per state for these connections, in one grouped query."""
    counts: dict[int, dict[str, int]] = {cid: {} for cid in connection_ids}
    if connection_ids:
        for cid, state, n in db.execute(
            select(SyncedLink.connection_id, SyncedLink.state, func.count())
            .where(SyncedLink.connection_id.in_(connection_ids))
            .group_by(SyncedLink.connection_id, SyncedLink.state)
        ):
            counts[cid][state] = n
    return counts


# Pages ---------------------------------------------------------------------------------


def _page_arg(name: str = "page") -> int:
    return max(1, min(request.args.get(name, 1, type=int) or 1, MAX_PAGE))


def failed_runs() -> Select:
    """Failed and partial runs with their account id, newest first."""
    return (
        select(SyncRun, Connection.account_id)
        .join(Connection, Connection.id == SyncRun.connection_id)
        .where(SyncRun.status.in_([RunStatus.FAILED, RunStatus.PARTIAL]))
        .order_by(SyncRun.id.desc())
    )


@bp.get("/")
@login_required
def dashboard() -> Any:
    db = db_session()
    return render_template(
        "admin/dashboard.html",
        activity=fleet_activity(db, utcnow()),
        latest_failures=db.execute(failed_runs().limit(5)).all(),
    )


@bp.get("/api/activity.json")
@login_required
def activity() -> Response:
    return jsonify(fleet_activity(db_session(), utcnow()))


@bp.get("/api/runs.json")
@login_required
def runs_json() -> Response:
    """Status and progress of the given runs (the connection page follows its active runs)."""
    ids = [int(part) for part in request.args.get("ids", "").split(",")[:50] if part.isdigit()]
    rows = db_session().scalars(select(SyncRun).where(SyncRun.id.in_(ids))).all() if ids else []
    return jsonify(runs=[_run_json(run) for run in rows])


@bp.get("/connections")
@login_required
def connections() -> Any:
    q = request.args.get("q", "").strip()[:200]
    status = request.args.get("status", "")
    if status not in {s.value for s in ConnectionStatus}:
        status = ""
    page = _page_arg()
    db = db_session()
    found, total = paginate(db, search_connections(q, status), page, CONNECTIONS_PER_PAGE)
    rows = [connection for (connection,) in found]
    return render_template(
        "admin/connections.html",
        rows=rows,
        counts=link_counts(db, [c.id for c in rows]),
        total=total,
        q=q,
        status=status,
        statuses=[s.value for s in ConnectionStatus],
        page=page,
        per_page=CONNECTIONS_PER_PAGE,
    )


def _connection_or_404(db: Session, connection_id: int) -> Connection:
    connection = db.get(Connection, connection_id)
    if connection is None:
        raise NotFound(f"There is no connection #{connection_id}.")
    return connection


@bp.get("/connections/<int:connection_id>")
@login_required
def connection_detail(connection_id: int) -> Any:
    db = db_session()
    connection = _connection_or_404(db, connection_id)
    runs = db.scalars(
        select(SyncRun)
        .where(SyncRun.connection_id == connection_id)
        .order_by(SyncRun.id.desc())
        .limit(RECENT_RUNS)
    ).all()
    links_page = _page_arg("links_page")
    found, links_total = paginate(
        db,
        select(SyncedLink)
        .where(SyncedLink.connection_id == connection_id)
        # Errors first: they are what an operator opens this page for.
        .order_by(SyncedLink.state != LinkState.ERROR, SyncedLink.source_id),
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
        states=link_counts(db, [connection_id])[connection_id],
        can_sync=connection.status == ConnectionStatus.ACTIVE,
    )


@bp.post("/connections/<int:connection_id>/<any(resync, reconcile):action>")
@login_required
def start_run(connection_id: int, action: str) -> Any:
    db = db_session()
    connection = _connection_or_404(db, connection_id)
    back = url_for("web_admin.connection_detail", connection_id=connection_id)
    if connection.status != ConnectionStatus.ACTIVE:
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
    runs, runs_total = paginate(db, failed_runs(), runs_page, FAILURES_PER_PAGE)
    links, links_total = paginate(
        db,
        select(SyncedLink, Connection.account_id)
        .join(Connection, Connection.id == SyncedLink.connection_id)
        .where(SyncedLink.state == LinkState.ERROR)
        .order_by(SyncedLink.updated_at.desc(), SyncedLink.id.desc()),
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


# Presentation helpers, errors, headers -------------------------------------------------


def _ago(value: datetime | None, now: datetime | None = None) -> str:
    if value is None:
        return "never"
    seconds = int(((now or utcnow()) - value).total_seconds())
    future = seconds < 0
    seconds = abs(seconds)
    if seconds < 45:
        text = f"{seconds} s"
    elif seconds < 45 * 60:
        text = f"{round(seconds / 60)} min"
    elif seconds < 36 * 3600:
        text = f"{round(seconds / 3600)} h"
    else:
        text = f"{round(seconds / 86400)} d"
    return f"in {text}" if future else f"{text} ago"


def _timestamp(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else ""


def _duration(run: SyncRun) -> str:
    if run.started_at is None:
        return ""
    seconds = ((run.finished_at or utcnow()) - run.started_at).total_seconds()
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _page_url(param: str, page: int) -> str:
    """This page's URL with another page number for `param` (the filters are kept)."""
    values: dict[str, Any] = {**(request.view_args or {}), **request.args.to_dict()}
    values[param] = page
    return url_for(cast(str, request.endpoint), **values)


@bp.context_processor
def _template_helpers() -> dict[str, Any]:
    return {
        "operator": current_operator() if console_enabled(services().settings) else None,
        "ago": _ago,
        "timestamp": _timestamp,
        "duration": _duration,
        "page_url": _page_url,
    }


def _error(status: int, code: str, message: str, title: str | None = None) -> Response:
    if _is_api():  # the same shape as the app's other JSON errors
        response = jsonify(error={"code": code, "message": message})
        response.status_code = status
        return response
    body = render_template(
        "admin/error.html",
        status=status,
        title=title or HTTP_STATUS_CODES.get(status, "Error"),
        message=message,
    )
    return Response(body, status, mimetype="text/html")


@bp.errorhandler(CSRFError)
def _csrf_failed(_exc: CSRFError) -> Response:
    return _error(
        400,
        "csrf_failed",
        "This form expired or did not come from this console. Go back, reload and try again.",
        "Form expired",
    )


@bp.errorhandler(DomainError)
def _domain_error(exc: DomainError) -> Response:
    return _error(exc.status, exc.code, exc.message)


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Response:
    code = (exc.name or "error").lower().replace(" ", "_")
    response = _error(exc.code or 500, code, exc.description or exc.name, exc.name)
    for name, value in exc.get_headers():  # e.g. Allow on 405
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


@bp.after_request
def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    response.headers.setdefault("X-Robots-Tag", "noindex")
    return response
