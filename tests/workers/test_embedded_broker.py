"""The embedded default's SQLite broker hands a message to a waiting consumer within a tenth
of a second or so (kombu polls it; its default, once a second, made every webhook take about
a second to reach Close)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from service.jobs import make_celery
from service.settings import Settings


def test_a_waiting_consumer_gets_a_message_within_a_poll(
    make_settings: Callable[..., Settings],
) -> None:
    app = make_celery(make_settings())
    delays: list[float] = []
    with app.connection_for_write() as producer_conn, app.connection_for_read() as consumer_conn:
        outbox = producer_conn.SimpleQueue("latency-probe")
        inbox = consumer_conn.SimpleQueue("latency-probe")
        for n in range(5):
            got: list[float] = []

            def consume(seen: list[float] = got) -> None:
                message = inbox.get(block=True, timeout=5)
                seen.append(time.monotonic())
                message.ack()

            consumer = threading.Thread(target=consume)
            consumer.start()
            time.sleep(0.25 + 0.1 * n)  # the consumer is polling an empty queue by now
            sent = time.monotonic()
            outbox.put({"n": n})
            consumer.join(10)
            assert got, "the message never arrived"
            delays.append(got[0] - sent)
        outbox.close()
        inbox.close()
    assert max(delays) < 0.4, delays
