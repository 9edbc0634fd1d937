"""The console's view of events to the integrator: the Events page, the recent events on a
connection's page (with every delivery attempt), and the Redeliver button."""

from __future__ import annotations

import logging
from typing import Any

from flask import flash, redirect, render_template, request

from service.events.delivery import redeliver
from service.events.feed import attempts_of, recent_events
from service.infra.models import DeliveryState
from service.web.admin.auth import login_required
from service.web.admin.pages import _safe_next, bp
from service.web.context import db_session, services

log = logging.getLogger(__name__)

EVENTS_PER_PAGE = 50
CONNECTION_EVENTS = 10
STATES = tuple(str(s) for s in DeliveryState)


def _with_attempts(events: list[Any]) -> list[tuple[Any, list[Any]]]:
    attempts = attempts_of(db_session(), [e.id for e in events])
    return [(e, attempts[e.id]) for e in events]


@bp.get("/events")
@login_required
def events() -> Any:
    state = request.args.get("state") or None
    if state not in (None, *STATES):
        state = None
    rows = recent_events(db_session(), state=state, limit=EVENTS_PER_PAGE)
    return render_template(
        "admin/events.html",
        rows=_with_attempts(rows),
        state=state,
        states=STATES,
        webhook_url=services().settings.INTEGRATOR_WEBHOOK_URL,
    )


@bp.post("/events/<int:event_id>/redeliver")
@login_required
def redeliver_event(event_id: int) -> Any:
    db = db_session()
    back = _safe_next(request.form.get("back"))
    event = redeliver(db, event_id)
    if event is None:
        flash(f"No event #{event_id}.", "error")
        return redirect(back, code=303)
    db.commit()  # wakes the deliverer after the commit
    log.info("operator redelivered an event", extra={"event_id": event_id})
    flash(f"Event {event.uid} queued for delivery again.", "ok")
    return redirect(back, code=303)


@bp.context_processor
def _connection_events() -> dict[str, Any]:
    def connection_events(connection_id: int) -> list[tuple[Any, list[Any]]]:
        rows = recent_events(db_session(), connection_id=connection_id, limit=CONNECTION_EVENTS)
        return _with_attempts(rows)

    return {"connection_events": connection_events}
