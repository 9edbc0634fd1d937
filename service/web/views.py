"""The org admin's pages: connect, OAuth callback, status with Sync now and Disconnect."""

from __future__ import annotations

import secrets
from typing import Any

from flask import Blueprint, Response, jsonify, redirect, render_template, session, url_for
from flask import request as flask_request
from sqlalchemy.orm import Session

from service.connections import queries
from service.connections.authorize import (
    ConsentDeclined,
    begin_authorization,
    check_state,
    complete_authorization,
)
from service.connections.disconnect import disconnect
from service.connections.sessions import connect_token_for, resolve_connect_token
from service.errors import Conflict
from service.infra.models import (
    Connection,
    ConnectionStatus,
    Trigger,
)
from service.sync.triggers import request_coalesced_sync
from service.web.context import db_session, services

bp = Blueprint("web_views", __name__)

BINDING_KEY = "oauth_binding"
LINKS_SHOWN = 200


def _browser_binding() -> str:
    binding = session.get(BINDING_KEY)
    if not isinstance(binding, str):
        binding = secrets.token_urlsafe(24)
        session[BINDING_KEY] = binding
    return binding


def _status_context(db: Session, connection: Connection) -> dict[str, Any]:
    runs = queries.recent_runs(db, connection.id, 1)
    return {
        "connection": connection,
        "counts": queries.link_counts(db, connection.id),
        "links": db.scalars(queries.links_errors_first(connection.id).limit(LINKS_SHOWN)).all(),
        "last_run": runs[0] if runs else None,
    }


@bp.get("/connect/<token>")
def connect_page(token: str) -> Any:
    db = db_session()
    connect = resolve_connect_token(db, services().settings, token)
    connection = queries.find_connection(db, connect.account_id)
    notice = session.pop("notice", None)
    if connection is not None and connection.status != ConnectionStatus.DISCONNECTED:
        return render_template(
            "status.html", token=token, notice=notice, **_status_context(db, connection)
        )
    return render_template(
        "connect.html",
        token=token,
        account_id=connect.account_id,
        connection=connection,
        notice=notice,
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
    _pending, connect = check_state(db, args.get("state"), session.get(BINDING_KEY))
    token = connect_token_for(services().settings, connect.id)
    try:
        complete_authorization(
            db, services(), connect=connect, code=args.get("code"), error=args.get("error")
        )
    except ConsentDeclined as exc:
        db.commit()  # the state is used up either way
        return render_template("declined.html", token=token, message=exc.message), 400
    db.commit()  # the first sync is enqueued after this commit
    session["notice"] = "Connected. The first sync has started."
    return redirect(connect.return_url or url_for("web_views.connect_page", token=token), code=303)


@bp.post("/connect/<token>/sync")
def sync_now(token: str) -> Any:
    db = db_session()
    connect = resolve_connect_token(db, services().settings, token)
    connection = queries.find_connection(db, connect.account_id)
    if connection is None:
        raise Conflict("This account is not connected, so there is nothing to sync.")
    # Coalesced like webhooks: a burst of clicks records one request and wakes one sync.
    request_coalesced_sync(db, services(), connection, Trigger.MANUAL)
    db.commit()
    session["notice"] = "Sync started."
    return redirect(url_for("web_views.connect_page", token=token), code=303)


@bp.post("/connect/<token>/disconnect")
def disconnect_now(token: str) -> Any:
    db = db_session()
    connect = resolve_connect_token(db, services().settings, token)
    connection = queries.find_connection(db, connect.account_id)
    if connection is not None and connection.status != ConnectionStatus.DISCONNECTED:
        db.rollback()
        disconnect(services(), connection.id, keep_links=False)
    session["notice"] = "Disconnected. Your links were removed from Close."
    return redirect(url_for("web_views.connect_page", token=token), code=303)


@bp.get("/connect/<token>/status.json")
def status_json(token: str) -> Response:
    db = db_session()
    connect = resolve_connect_token(db, services().settings, token)
    connection = queries.find_connection(db, connect.account_id)
    if connection is None:
        return jsonify(status="not_connected")
    context = _status_context(db, connection)
    run = context["last_run"]
    return jsonify(
        status=connection.status,
        counts=context["counts"],
        run=None if run is None else queries.run_json(run),
    )
