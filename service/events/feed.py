"""The event feed (GET /api/v1/events) and the console's event listings: the read side."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.infra.models import Event, EventAttempt


def events_after(session: Session, after: int, limit: int) -> tuple[list[Event], int, bool]:
    """Events with a sequence above `after`, oldest first; the cursor to poll next (the last
    sequence returned, or `after` again when there is nothing new); whether more are waiting."""
    rows = list(
        session.scalars(select(Event).where(Event.id > after).order_by(Event.id).limit(limit + 1))
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if rows else after), more


def sequence_of(session: Session, uid: str) -> int | None:
    """The feed position of an event given by its public id (`evt_...`)."""
    return session.scalar(select(Event.id).where(Event.uid == uid))


def recent_events(
    session: Session,
    *,
    connection_id: int | None = None,
    state: str | None = None,
    limit: int = 50,
) -> list[Event]:
    query = select(Event).order_by(Event.id.desc()).limit(limit)
    if connection_id is not None:
        query = query.where(Event.connection_id == connection_id)
    if state:
        query = query.where(Event.delivery_state == state)
    return list(session.scalars(query))


def attempts_of(session: Session, event_ids: Sequence[int]) -> dict[int, list[EventAttempt]]:
    found: dict[int, list[EventAttempt]] = {event_id: [] for event_id in event_ids}
    if not event_ids:
        return found
    for attempt in session.scalars(
        select(EventAttempt)
        .where(EventAttempt.event_id.in_(list(event_ids)))
        .order_by(EventAttempt.id)
    ):
        found[attempt.event_id].append(attempt)
    return found
