"""GET /api/v1/events: the integrator's feed of events, oldest first, with a cursor."""

from __future__ import annotations

from pydantic import TypeAdapter

from service.api.event_schemas import EventPage, EventsQuery, IntegratorEvent
from service.api.routing import route
from service.errors import ValidationFailed
from service.events.delivery import event_body
from service.events.feed import events_after, sequence_of
from service.web.context import db_session

_EVENT: TypeAdapter[IntegratorEvent] = TypeAdapter(IntegratorEvent)


@route(
    "GET",
    "/events",
    summary="Events (the ones also sent to INTEGRATOR_WEBHOOK_URL), oldest first, with a cursor",
    description=(
        "Poll with ?after=<next of the previous page>. Events are kept "
        "INTEGRATOR_EVENTS_RETENTION_DAYS days (30 by default)."
    ),
    query=EventsQuery,
    responses={200: EventPage},
)
def list_events(query: EventsQuery) -> EventPage:
    session = db_session()
    after = query.after
    if after.startswith("evt_"):
        sequence = sequence_of(session, after)
        if sequence is None:
            raise ValidationFailed(
                "after: no such event (it may be older than the retention period)", field="after"
            )
        position = sequence
    else:
        position = int(after)
    rows, cursor, more = events_after(session, position, query.limit)
    return EventPage(
        data=[_EVENT.validate_python(event_body(row)) for row in rows],
        next=str(cursor),
        has_more=more,
    )
