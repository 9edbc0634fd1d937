"""Change → event received by the integrator: p50/p99 over N changes, through the real path
(commit with the event in it → wake-up task on the `events` queue via Redis → a Celery worker
→ signed POST → the demo integrator's receiver, which verifies the signature).

A scenario of `python -m bench.run` (`events_latency`); alone: `python -m bench.events_latency
[N]`. The first event is a warm-up, not counted: it waits (up to a minute) until the worker
consumes the `events` queue, so a worker that never started fails loudly instead of timing
every change out."""

from __future__ import annotations

import secrets
import sys
import time
from typing import Any

from bench.stack import free_port, stack
from service.demo_source.integrator import DemoIntegrator
from service.demo_source.server import DemoSourceServer
from service.infra import outbox
from service.infra.models import Connection
from service.jobs import make_celery, wake_events_with
from service.services import Services


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def received_at(receiver: DemoIntegrator, uid: str, timeout: float) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with receiver._lock:
            for event in receiver.events:
                if event["id"] == uid:
                    return float(event["received_at"])
        time.sleep(0.001)
    return None


def measure(count: int) -> dict[str, Any]:
    secret = secrets.token_urlsafe(16)
    receiver = DemoIntegrator(linksync_url="", api_key=None, webhook_secret=secret)
    server = DemoSourceServer(port=free_port(), integrator=receiver).start()
    env = {
        "INTEGRATOR_WEBHOOK_URL": f"{server.url}/_demo/events",
        "INTEGRATOR_WEBHOOK_SECRET": secret,
    }
    latencies: list[float] = []
    lost = 0
    try:
        with stack(extra_env=env) as s:
            s.start_workers(count=1, threads=4)
            ids = s.create_connections([("bench-events", "user_jane", "orga_acme")])
            cid = next(iter(ids.values()))
            svc = Services(s.settings, wake_events=wake_events_with(make_celery(s.settings)))

            def change(n: int) -> tuple[str, float]:
                with svc.db.session() as session:
                    connection = session.get(Connection, cid)
                    assert connection is not None
                    connection.status_reason = f"change {n}"
                    uid = outbox.record_status(
                        session, connection, outbox.EventType.CONNECTION_PAUSED
                    ).uid
                    session.flush()
                return uid, time.time()  # committed; the wake-up is sent right after the commit

            uid, _ = change(-1)
            if received_at(receiver, uid, timeout=60) is None:
                raise RuntimeError(
                    f"the warm-up event never arrived: is the worker consuming the events "
                    f"queue? (logs in {s.workdir})"
                )
            for n in range(count):
                uid, committed = change(n)
                arrived = received_at(receiver, uid, timeout=30)
                if arrived is None:
                    lost += 1
                else:
                    latencies.append((arrived - committed) * 1000)
                time.sleep(0.02)  # changes spaced out: the latency of one change, not a burst
            svc.close()
    finally:
        server.stop()
    p99 = pct(latencies, 99) if latencies else float("nan")
    return {
        "params": {
            "changes": count,
            "spacing_ms": 20,
            "worker": "1 process x 4 threads",
            "broker": "Redis",
            "receiver": "demo integrator (signature verified)",
        },
        "ours": {
            "received": len(latencies),
            "lost": lost,
            "p50_ms": round(pct(latencies, 50), 1) if latencies else None,
            "p99_ms": round(p99, 1) if latencies else None,
            "max_ms": round(max(latencies), 1) if latencies else None,
        },
        "baseline": {
            "note": "polling the feed (GET /api/v1/events) every N seconds: N/2 on average"
        },
        "ratio": None,
        "target": "p99 < 2 s, nothing lost",
        "pass": lost == 0 and bool(latencies) and p99 < 2000,
    }


def main(count: int = 200) -> None:
    result = measure(count)
    ours = result["ours"]
    print(
        f"change -> event received, {count} changes: p50 {ours['p50_ms']} ms, "
        f"p99 {ours['p99_ms']} ms, max {ours['max_ms']} ms, lost {ours['lost']}"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
