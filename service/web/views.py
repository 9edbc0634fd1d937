"""The org admin's pages: connect (a single-use link), the OAuth callback, and the status view
(Sync now, Disconnect) reached through this browser's manage session, not the connect link.

The connect widget (static/connect.js) opens the connect link in a popup with
`?widget_origin=<the integrator page's origin>`. The connect page checks that origin against
RETURN_URL_ALLOWED_ORIGINS and keeps it in this browser's session, keyed by the connect
session; the page that ends the flow (the status view after a success, the declined page, an
error page) then carries the outcome in `data-` attributes for static/connect-done.js, which
posts it to exactly that origin and closes the popup."""

from __future__ import annotations

import secrets
from typing import Any

from flask import Blueprint, Response, jsonify, redirect, render_template, session, url_for
from flask import request as flask_request
from sqlalchemy.orm import Session

from service.connections import queries
from service.connections.authorize import (
    CallbackReplayed,
    ConsentDeclined,
    begin_authorization,
    begin_reconnect,
    check_state,
    finish_authorization,
)
from service.connections.disconnect import disconnect
from service.connections.sessions import (
    check_connect_usable,
    claim_manage_link,
    connect_token_for,
    grant_manage_session,
    has_manage_session,
    load_connect_token,
    manage_session_connection,
    member_connect_link,
    resolve_connect_token,
    validate_widget_origin,
)
from service.errors import Conflict, DomainError, Gone, ValidationFailed
from service.infra.models import (
    Connection,
    ConnectionStatus,
    ConnectSession,
    Trigger,
)
from service.sync.coverage import NOT_SYNCED_YET
from service.sync.triggers import request_coalesced_sync
from service.web.context import db_session, services
from service.web.errors import error_response

bp = Blueprint("web_views", __name__)

BINDING_KEY = "oauth_binding"
MANAGE_KEY = "manage_session"
LINKS_SHOWN = 200
WIDGET_FLOWS_KEY = "widget_flows"  # {connect session id: opener's origin}
WIDGET_DONE_KEY = "widget_done"  # the outcome, for the status view the callback redirects to
WIDGET_FLOWS_KEPT = 5  # a few flows in parallel tabs; the cookie stays small


def _browser_binding() -> str:
    binding = session.get(BINDING_KEY)
    if not isinstance(binding, str):
        binding = secrets.token_urlsafe(24)
        session[BINDING_KEY] = binding
    return binding


def _remember_manage(manage_id: str) -> None:
    session[MANAGE_KEY] = manage_id
    session.permanent = True  # survives a browser restart; the server-side row decides


def _managed_connection(db: Session) -> Connection:
    return manage_session_connection(
        db, services().settings, session.get(MANAGE_KEY), session.get(BINDING_KEY)
    )


def _connection_of(db: Session, connect: ConnectSession) -> Connection | None:
    """The connection a connect link is about: the admin's, or its member's own."""
    if connect.member_id is not None:
        return queries.find_member_connection(db, connect.account_id, connect.member_id)
    return queries.find_connection(db, connect.account_id)


def _team(db: Session, connection: Connection) -> dict[str, Any] | None:
    """The team table of an admin connection (queries.coverage), None without a team."""
    if connection.member_id is not None or connection.status == ConnectionStatus.DISCONNECTED:
        return None
    report = queries.coverage(db, connection.account_id)
    return report if report["members"] else None


def _status_context(db: Session, connection: Connection) -> dict[str, Any]:
    runs = queries.recent_runs(db, connection.id, 1)
    return {
        "connection": connection,
        "counts": queries.link_counts(db, connection.id),
        "links": db.scalars(queries.links_errors_first(connection.id).limit(LINKS_SHOWN)).all(),
        "last_run": runs[0] if runs else None,
        "team": _team(db, connection),
        "not_synced_yet": NOT_SYNCED_YET,
    }


def _team_json(team: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the status page's script updates in the team table."""
    if team is None:
        return None
    return {
        "totals": team["totals"],
        "members": [
            {
                "member_id": m["member_id"],
                "covered": m["covered"],
                "reason": m["reason"],
                "connection": m["connection"]["status"] if m["connection"] else None,
                "via": m["connection"]["via"] if m["connection"] else None,
                "links": m["links"],
                "mappings": len(m["shared_mappings"]),
            }
            for m in team["members"]
        ],
    }


def _to_status() -> Any:
    return redirect(url_for("web_views.status_page"), code=303)


# Widget -------------------------------------------------------------------------------------


def _remember_widget_flow(connect_id: str, origin: str) -> None:
    flows = dict(session.get(WIDGET_FLOWS_KEY) or {})
    flows.pop(connect_id, None)
    flows[connect_id] = origin
    session[WIDGET_FLOWS_KEY] = dict(list(flows.items())[-WIDGET_FLOWS_KEPT:])


def _take_widget_flow(connect_id: str | None) -> str | None:
    """The opener's origin of this connect flow (or, when the callback could not tell which
    flow it ends, of this browser's latest one), forgotten once its outcome is sent."""
    flows = dict(session.get(WIDGET_FLOWS_KEY) or {})
    if not flows:
        return None
    key = connect_id if connect_id in flows else None
    if key is None and connect_id is None:
        key = list(flows)[-1]
    origin = flows.pop(key, None) if key is not None else None
    session[WIDGET_FLOWS_KEY] = flows
    return origin if isinstance(origin, str) else None


def _widget_outcome(origin: str | None, status: str, account_id: str | None) -> dict[str, Any]:
    if origin is None:
        return {}
    return {"widget": {"origin": origin, "status": status, "account_id": account_id or ""}}


def _widget_error(exc: DomainError, origin: str | None, account_id: str | None) -> Response:
    return error_response(
        exc.status,
        exc.code,
        exc.message,
        field=exc.field,
        context=_widget_outcome(origin, "error", account_id),
    )


# Connect ------------------------------------------------------------------------------------


@bp.get("/connect/<token>")
def connect_page(token: str) -> Any:
    db = db_session()
    settings = services().settings
    raw_origin = flask_request.args.get("widget_origin")
    # An origin not allowed is refused before anything else: nothing is ever posted to it.
    origin = None if raw_origin is None else validate_widget_origin(raw_origin, settings)
    try:
        connect = load_connect_token(db, settings, token)
    except DomainError as exc:
        return _widget_error(exc, origin, None)
    try:
        check_connect_usable(db, settings, connect)
    except Gone as exc:
        # A used or expired link, reopened by the browser that connected: its status view.
        if has_manage_session(
            db, settings, session.get(MANAGE_KEY), session.get(BINDING_KEY), connect.account_id
        ):
            if origin is not None:
                session[WIDGET_DONE_KEY] = _widget_outcome(origin, "connected", connect.account_id)[
                    "widget"
                ]
            return _to_status()
        return _widget_error(exc, origin, connect.account_id)
    if origin is not None:
        _remember_widget_flow(connect.id, origin)
    connection = _connection_of(db, connect)
    return render_template(
        "connect.html",
        token=token,
        account_id=connect.account_id,
        connection=connection,
        notice=session.pop("notice", None),
        member=queries.member_invite(db, connect.account_id, connect.member_id)
        if connect.member_id is not None
        else None,
    )


@bp.post("/connect/<token>/authorize")
def authorize(token: str) -> Any:
    db = db_session()
    connect = resolve_connect_token(db, services().settings, token)
    url = begin_authorization(db, services(), connect, _browser_binding())
    db.commit()
    return redirect(url, code=302)


@bp.get("/oauth/close/callback")
def callback() -> Any:
    db = db_session()
    args = flask_request.args
    binding = session.get(BINDING_KEY)
    try:
        _pending, connect = check_state(db, services().settings, args.get("state"), binding)
    except CallbackReplayed:
        db.rollback()
        return _to_status()
    except DomainError as exc:
        db.rollback()
        return _widget_error(exc, _take_widget_flow(None), None)
    assert isinstance(binding, str)  # check_state refuses a browser without one
    try:
        connection, manage = finish_authorization(
            db,
            services(),
            connect=connect,
            code=args.get("code"),
            error=args.get("error"),
            browser_binding=binding,
        )
    except ConsentDeclined as exc:
        db.commit()  # the state is used up either way
        token = connect_token_for(services().settings, connect.id)
        widget = _widget_outcome(_take_widget_flow(connect.id), "declined", connect.account_id)
        return render_template("declined.html", token=token, message=exc.message, **widget), 400
    except DomainError as exc:
        db.rollback()  # as before the widget: a failed callback stores nothing
        return _widget_error(exc, _take_widget_flow(connect.id), connect.account_id)
    db.commit()  # the first sync is enqueued after this commit
    _remember_manage(manage.id)
    session["notice"] = "Connected. The first sync has started."
    origin = _take_widget_flow(connect.id)
    if origin is not None:
        # In the widget's popup: the status view tells the opener and closes; return_url is
        # for the full-page flow (the fallback when popups are blocked).
        session[WIDGET_DONE_KEY] = _widget_outcome(origin, "connected", connection.account_id)[
            "widget"
        ]
        return _to_status()
    return redirect(connect.return_url or url_for("web_views.status_page"), code=303)


# Manage -------------------------------------------------------------------------------------


@bp.get("/manage/<token>")
def manage_link(token: str) -> Any:
    db = db_session()
    manage = claim_manage_link(db, services().settings, token, _browser_binding())
    manage_session_connection(db, services().settings, manage.id, session.get(BINDING_KEY))
    db.commit()
    _remember_manage(manage.id)
    return _to_status()


@bp.get("/status")
def status_page() -> Any:
    db = db_session()
    connection = _managed_connection(db)
    done = session.pop(WIDGET_DONE_KEY, None)
    widget = done if isinstance(done, dict) else None
    return render_template(
        "status.html",
        notice=session.pop("notice", None),
        widget=widget,
        member_link=session.pop("member_link", None),
        **_status_context(db, connection),
    )


@bp.get("/status.json")
def status_json() -> Response:
    db = db_session()
    connection = _managed_connection(db)
    context = _status_context(db, connection)
    run = context["last_run"]
    return jsonify(
        status=connection.status,
        counts=context["counts"],
        run=None if run is None else queries.run_json(run),
        team=_team_json(context["team"]),
    )


@bp.post("/status/members/<member_id>/connect-link")
def member_link(member_id: str) -> Any:
    """A team member's personal connect link ("Get link" on the team table): JSON for the
    page's script, or back to the status page showing it in the member's row."""
    db = db_session()
    connection = _managed_connection(db)
    url, expires_at = member_connect_link(db, services().settings, connection, member_id)
    db.commit()
    if flask_request.accept_mimetypes.best == "application/json":
        return jsonify(member_id=member_id, url=url, expires_at=expires_at.isoformat())
    session["member_link"] = {"member_id": member_id, "url": url}
    return _to_status()


@bp.post("/status/sync")
def sync_now() -> Any:
    db = db_session()
    connection = _managed_connection(db)
    if not connection.syncable:
        raise Conflict("This account is not connected, so there is nothing to sync.")
    # Coalesced like webhooks: a burst of clicks records one request and wakes one sync.
    request_coalesced_sync(db, services(), connection, Trigger.MANUAL)
    db.commit()
    session["notice"] = "Sync started."
    return _to_status()


@bp.post("/status/reconnect")
def reconnect() -> Any:
    db = db_session()
    connection = _managed_connection(db)
    url = begin_reconnect(db, services(), connection, _browser_binding())
    db.commit()
    return redirect(url, code=302)


@bp.get("/status/disconnect")
def confirm_disconnect() -> Any:
    db = db_session()
    connection = _managed_connection(db)
    if connection.status == ConnectionStatus.DISCONNECTED:
        return _to_status()
    return render_template(
        "disconnect.html", connection=connection, counts=queries.link_counts(db, connection.id)
    )


KEEP_LINKS_CHOICES = {"remove": False, "keep": True}


@bp.post("/status/disconnect")
def disconnect_now() -> Any:
    db = db_session()
    connection = _managed_connection(db)
    choice = flask_request.form.get("links")
    if choice not in KEEP_LINKS_CHOICES:
        raise ValidationFailed(
            "Choose whether to remove the links from Close or leave them there.", field="links"
        )
    keep_links = KEEP_LINKS_CHOICES[choice]
    connection_id = connection.id
    if connection.status != ConnectionStatus.DISCONNECTED:
        db.rollback()  # disconnect calls Close and commits its own work
        disconnect(services(), connection_id, keep_links=keep_links)
        # Disconnecting ends every browser's access; this browser keeps its (disconnected)
        # status view, from which it can connect again.
        connection = queries.connection_by_id(db, connection_id)
        manage = grant_manage_session(db, services().settings, connection, _browser_binding())
        db.commit()
        _remember_manage(manage.id)
    session["notice"] = (
        "Disconnected. Your links were left in Close; they will no longer be updated."
        if keep_links
        else "Disconnected. Your links were removed from Close."
    )
    return _to_status()
