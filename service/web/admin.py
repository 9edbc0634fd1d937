"""The operator console at /admin: connections, runs, per-link errors, failures, live activity."""

from __future__ import annotations

import secrets
from datetime import timedelta
from functools import wraps
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from sqlalchemy import func, or_, select

from service.db import utcnow
from service.errors import DomainError, NotFound, TooManyRequests, Unauthorized
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
from service.operators import console_enabled, record_failure, throttled, verify_operator
from service.sync.triggers import enqueue_after_commit

bp = Blueprint("web_admin", __name__, url_prefix="/admin")

PAGE = 50
SESSION_KEY = "operator"
SESSION_HOURS = 8


def _enabled() -> None:
    if not console_enabled(services()):
        raise NotFound(
            "The operator console is disabled. Set OPERATOR_USERNAME and OPERATOR_PASSWORD_HASH "
            "(make a hash with: linksync operator hash-password) to enable it."
        )


def login_required(view: Any) -> Any:
    @wraps(view)
    def wrapper(**kwargs: Any) -> Any:
        _enabled()
        operator = session.get(SESSION_KEY)
        if not isinstance(operator, dict) or operator.get("until", 0) < utcnow().timestamp():
            if request.path.endswith(".json"):
                raise Unauthorized("operator login required")
            return redirect(url_for("web_admin.login", next=request.path))
        return view(**kwargs)

    return wrapper


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    _enabled()
    svc = services()
    error = None
    if request.method == "POST":
        username = request.form.get("username", "")[:128]
        client = request.remote_addr or "unknown"
        if throttled(svc, username, client):
            raise TooManyRequests("Too many failed sign-ins. Wait 15 minutes and try again.")
        if verify_operator(svc, username, request.form.get("password", "")[:1024]):
            session.clear()  # a fresh session: no fixation
            session.permanent = True
            session[SESSION_KEY] = {
                "name": username,
                "until": (utcnow() + timedelta(hours=SESSION_HOURS)).timestamp(),
                "nonce": secrets.token_hex(8),
            }
            target = request.args.get("next", "")
            return redirect(
                target if target.startswith("/admin") else url_for("web_admin.dashboard"), code=303
            )
        record_failure(svc, username, client)
        error = "Wrong username or password."
    return render_template("admin/login.html", error=error), 401 if error else 200


@bp.post("/logout")
def logout() -> Any:
    session.pop(SESSION_KEY, None)
    return redirect(url_for("web_admin.login"), code=303)


def _counts(model: Any, column: Any) -> dict[str, int]:
    return dict(
        db_session().execute(select(column, func.count()).select_from(model).group_by(column)).all()
    )


@bp.get("/")
@login_required
def dashboard() -> Any:
    db = db_session()
    hour_ago = utcnow() - timedelta(hours=1)
    recent = dict(
        db.execute(
            select(SyncRun.status, func.count())
            .where(SyncRun.queued_at >= hour_ago)
            .group_by(SyncRun.status)
        ).all()
    )
    return render_template(
        "admin/dashboard.html",
        connections=_counts(Connection, Connection.status),
        links=_counts(SyncedLink, SyncedLink.state),
        recent=recent,
        active=_active_runs(),
    )


def _active_runs() -> list[dict[str, Any]]:
    rows = (
        db_session()
        .execute(
            select(SyncRun, Connection.account_id)
            .join(Connection, Connection.id == SyncRun.connection_id)
            .where(SyncRun.status.in_([RunStatus.QUEUED, RunStatus.RUNNING]))
            .order_by(SyncRun.id.desc())
            .limit(50)
        )
        .all()
    )
    return [
        {
            "id": run.id,
            "account_id": account,
            "connection_id": run.connection_id,
            "status": run.status,
            "trigger": run.trigger,
            "done": run.progress_done,
            "total": run.progress_total,
        }
        for run, account in rows
    ]


@bp.get("/api/activity.json")
@login_required
def activity() -> Response:
    return jsonify(
        active=_active_runs(),
        connections=_counts(Connection, Connection.status),
        links=_counts(SyncedLink, SyncedLink.state),
    )


@bp.get("/connections")
@login_required
def connections() -> Any:
    db = db_session()
    q = request.args.get("q", "").strip()[:200]
    status = request.args.get("status", "")
    page = max(
        1,
        min(
            int(request.args.get("page", "1")) if request.args.get("page", "1").isdigit() else 1,
            10_000,
        ),
    )
    query = select(Connection)
    if q:
        like = f"%{q.lower()}%"
        query = query.where(
            or_(
                func.lower(Connection.account_id).like(like),
                func.lower(func.coalesce(Connection.close_user_email, "")).like(like),
                func.lower(func.coalesce(Connection.close_org_name, "")).like(like),
            )
        )
    if status in {s.value for s in ConnectionStatus}:
        query = query.where(Connection.status == status)
    rows = db.scalars(
        query.order_by(Connection.id.desc()).offset((page - 1) * PAGE).limit(PAGE + 1)
    ).all()
    shown = rows[:PAGE]
    counts: dict[int, dict[str, int]] = {}
    if shown:
        for cid, state, count in db.execute(
            select(SyncedLink.connection_id, SyncedLink.state, func.count())
            .where(SyncedLink.connection_id.in_([c.id for c in shown]))
            .group_by(SyncedLink.connection_id, SyncedLink.state)
        ):
            counts.setdefault(cid, {})[state] = count
    return render_template(
        "admin/connections.html",
        rows=shown,
        counts=counts,
        q=q,
        status=status,
        statuses=[s.value for s in ConnectionStatus],
        page=page,
        has_next=len(rows) > PAGE,
    )


@bp.get("/connections/<int:connection_id>")
@login_required
def connection_detail(connection_id: int) -> Any:
    db = db_session()
    connection = db.get(Connection, connection_id)
    if connection is None:
        abort(404)
    runs = db.scalars(
        select(SyncRun)
        .where(SyncRun.connection_id == connection_id)
        .order_by(SyncRun.id.desc())
        .limit(20)
    ).all()
    links = db.scalars(
        select(SyncedLink)
        .where(SyncedLink.connection_id == connection_id)
        .order_by(SyncedLink.state != LinkState.ERROR, SyncedLink.source_id)
        .limit(500)
    ).all()
    return render_template("admin/connection.html", connection=connection, runs=runs, links=links)


@bp.post("/connections/<int:connection_id>/<any(resync, reconcile):action>")
@login_required
def act(connection_id: int, action: str) -> Any:
    db = db_session()
    connection = db.get(Connection, connection_id)
    if connection is None:
        abort(404)
    if connection.status != ConnectionStatus.ACTIVE:
        raise DomainError(f"The connection is {connection.status}; it cannot sync.")
    trigger = Trigger.RECONCILE if action == "reconcile" else Trigger.MANUAL
    run = SyncRun(connection_id=connection.id, trigger=str(trigger), status=RunStatus.QUEUED)
    db.add(run)
    db.flush()
    enqueue_after_commit(db, services(), connection.id, str(trigger), run.id)
    db.commit()
    return redirect(url_for("web_admin.connection_detail", connection_id=connection_id), code=303)


@bp.get("/failures")
@login_required
def failures() -> Any:
    db = db_session()
    runs = db.execute(
        select(SyncRun, Connection.account_id)
        .join(Connection, Connection.id == SyncRun.connection_id)
        .where(SyncRun.status.in_([RunStatus.FAILED, RunStatus.PARTIAL]))
        .order_by(SyncRun.id.desc())
        .limit(100)
    ).all()
    links = db.execute(
        select(SyncedLink, Connection.account_id)
        .join(Connection, Connection.id == SyncedLink.connection_id)
        .where(SyncedLink.state == LinkState.ERROR)
        .order_by(SyncedLink.updated_at.desc())
        .limit(100)
    ).all()
    return render_template("admin/failures.html", runs=runs, links=links)
