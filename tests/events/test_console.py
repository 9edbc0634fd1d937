"""The operator console lists events with their attempts, and Redeliver queues one again and
wakes the deliverer after the commit; the receiver gets it a second time."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select

from service.events.delivery import deliver_due
from service.infra.models import DeliveryState, Event
from service.services import Services
from tests.conftest import new_account
from tests.events.conftest import Wakes
from tests.events.receiver import Receiver
from tests.events.test_delivery import emit
from tests.helpers import connect_directly
from tests.web.test_admin import enable_console, login, new_client


def test_events_page_shows_attempts_and_redeliver_sends_it_again(
    event_services: Services, sandbox: Any, receiver: tuple[Receiver, str], wakes: Wakes
) -> None:
    recv, _url = receiver
    enable_console(event_services.settings)
    cid = connect_directly(event_services, sandbox, new_account())
    recv.script = [500]
    (uid,) = emit(event_services, cid, 1)
    deliver_due(event_services)  # one failed attempt
    client = new_client(event_services)
    login(client)

    page = client.get("/admin/events").get_data(as_text=True)
    assert uid in page and "HTTP 500" in page and "Redeliver" in page
    detail = client.get(f"/admin/connections/{cid}").get_data(as_text=True)
    assert uid in detail and "connection.paused" in detail

    import time

    time.sleep(0.2)  # past the backoff
    deliver_due(event_services)
    assert [body["id"] for body in recv.delivered()] == [uid]

    with event_services.db.session() as session:
        event_id = session.scalar(select(Event.id).where(Event.uid == uid))
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token
    before = wakes.count
    answer = client.post(
        f"/admin/events/{event_id}/redeliver",
        data={"csrf_token": token.group(1), "back": f"/admin/connections/{cid}"},
    )
    assert answer.status_code == 303 and answer.headers["Location"].endswith(f"/connections/{cid}")
    assert wakes.count == before + 1  # woken after the commit
    with event_services.db.session() as session:
        event = session.get(Event, event_id)
        assert event is not None and event.delivery_state == DeliveryState.PENDING
    deliver_due(event_services)
    assert [body["id"] for body in recv.delivered()] == [uid, uid]
    # Without the CSRF token nothing happens.
    assert client.post(f"/admin/events/{event_id}/redeliver").status_code == 400
