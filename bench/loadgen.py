"""Open-loop load generator for signed webhooks (its own process, 127.0.0.1 only, bounded).

python -m bench.loadgen URL RATE SECONDS ACCOUNTS_FILE OUT_FILE
Sends RATE requests per second for SECONDS seconds on a schedule (not waiting for answers, so a
slow server cannot hide its latency), across the accounts listed, and writes latencies.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import requests
from requests.adapters import HTTPAdapter

from bench.stack import WEBHOOK_SECRET
from service.api.signatures import sign


def main() -> None:
    url, rate, seconds, accounts_file, out_file = sys.argv[1:6]
    accounts = json.loads(open(accounts_file).read())  # noqa: SIM115
    total = int(float(rate) * float(seconds))
    interval = 1.0 / float(rate)
    local = threading.local()
    latencies: list[float] = []
    server: list[float] = []
    statuses: dict[str, int] = {}
    sent_ids: list[str] = []
    lock = threading.Lock()

    def session() -> requests.Session:
        if not hasattr(local, "s"):
            local.s = requests.Session()
            local.s.mount("http://", HTTPAdapter(pool_maxsize=4))
        return local.s

    def fire(n: int) -> None:
        event_id = uuid.uuid4().hex
        body = json.dumps(
            {
                "id": event_id,
                "type": "event_types.changed",
                "account_id": accounts[n % len(accounts)],
            }
        ).encode()
        t = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "X-LinkSync-Signature": f"t={t},v1={sign(WEBHOOK_SECRET, t, body)}",
        }
        started = time.perf_counter()
        app_ms = None
        try:
            response = session().post(url, data=body, headers=headers, timeout=10)
            status = str(response.status_code)
            timing = response.headers.get("Server-Timing", "")
            if "dur=" in timing:
                app_ms = float(timing.split("dur=")[1].split(";")[0].split(",")[0])
        except requests.RequestException as exc:
            status = type(exc).__name__
        elapsed = time.perf_counter() - started
        with lock:
            latencies.append(elapsed)
            if app_ms is not None:
                server.append(app_ms)
            statuses[status] = statuses.get(status, 0) + 1
            if status == "202":
                sent_ids.append(event_id)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=24) as pool:
        for n in range(total):
            delay = start + n * interval - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(fire, n)
    duration = time.perf_counter() - start
    with open(out_file, "w") as handle:
        json.dump(
            {
                "latencies": latencies,
                "server_ms": server,
                "statuses": statuses,
                "accepted": len(sent_ids),
                "duration": duration,
            },
            handle,
        )


if __name__ == "__main__":
    main()
