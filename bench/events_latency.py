"""Change → event received by the integrator: p50/p99 over N changes, through the real path
(commit with the event in it → wake-up task on the `events` queue via Redis → a Celery worker
→ signed POST to a receiver). Not run by the tests: `python -m bench.events_latency [N]`."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

from werkzeug.wrappers import Request, Response

from bench.stack import free_port, stack
from service.infra import outbox
from service.infra.background_server import BackgroundServer
from service.infra.models import Connection
from service.jobs import make_celery, wake_events_with
from service.services import Services

received: dict[str, float] = {}
lock = threading.Lock()


def receiver(environ: dict[str, Any], start_response: Any) -> Any:
    request = Request(environ)
    body = request.get_json()
    with lock:
        received.setdefault(body["id"], time.perf_counter())
    return Response("{}", mimetype="application/json")(environ, start_response)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(count: int = 200) -> None:
    port = free_port()
    server = BackgroundServer(receiver, port=port).start()
    env = {
        "INTEGRATOR_WEBHOOK_URL": f"http://127.0.0.1:{port}/hook",
        "INTEGRATOR_WEBHOOK_SECRET": "bench-secret",
    }
    with stack(extra_env=env) as s:
        s.start_workers(count=1, threads=4)
        ids = s.create_connections([("bench-events", "user_jane", "orga_acme")])
        cid = next(iter(ids.values()))
        svc = Services(s.settings, wake_events=wake_events_with(make_celery(s.settings)))
        latencies: list[float] = []
        for n in range(count):
            with svc.db.session() as session:
                connection = session.get(Connection, cid)
                assert connection is not None
                connection.status_reason = f"change {n}"
                uid = outbox.record_status(
                    session, connection, outbox.EventType.CONNECTION_PAUSED
                ).uid
                session.flush()
            committed = time.perf_counter()  # the wake-up is sent right after the commit
            deadline = committed + 30
            while uid not in received and time.perf_counter() < deadline:
                time.sleep(0.001)
            latencies.append((received[uid] - committed) * 1000)
            time.sleep(0.02)  # changes spaced out: the latency of one change, not a burst
        svc.close()
    server.stop()
    print(
        f"change -> event received, {count} changes: p50 {pct(latencies, 0.5):.1f} ms, "
        f"p99 {pct(latencies, 0.99):.1f} ms, max {max(latencies):.1f} ms"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
