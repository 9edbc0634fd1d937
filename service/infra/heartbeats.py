"""Worker heartbeats: each worker process writes one coordinator key every few seconds
(Redis: linksync:worker-heartbeat:<hostname>; embedded: the coordination table); /readyz and
`linksync doctor` read them to say whether any worker is alive."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from service.infra import locks
from service.infra.coordination import Coordinator

log = logging.getLogger(__name__)


def record(coordinator: Coordinator, hostname: str, now: float | None = None) -> None:
    stamp = time.time() if now is None else now
    coordinator.touch(locks.worker_heartbeat(hostname), f"{stamp:.3f}", locks.WORKER_HEARTBEAT_TTL)


def forget(coordinator: Coordinator, hostname: str) -> None:
    coordinator.pop_flag(locks.worker_heartbeat(hostname))


@dataclass(frozen=True)
class WorkerStatus:
    alive: int
    last_seen_ago: float | None  # seconds since the newest heartbeat; None: never

    @property
    def ok(self) -> bool:
        return self.alive > 0

    def describe(self) -> str:
        if self.ok:
            return f"ok ({self.alive} alive)"
        if self.last_seen_ago is None:
            return "no worker has reported in yet"
        return f"no worker has reported in {self.last_seen_ago:.0f} s"


def status(coordinator: Coordinator, now: float | None = None) -> WorkerStatus:
    now = time.time() if now is None else now
    stamps = []
    for value in coordinator.scan(locks.WORKER_HEARTBEAT_PREFIX).values():
        try:
            stamps.append(float(value))
        except ValueError:
            continue
    alive = sum(1 for stamp in stamps if now - stamp <= locks.WORKER_HEARTBEAT_STALE)
    return WorkerStatus(alive, (now - max(stamps)) if stamps else None)


class HeartbeatThread:
    """Refreshes this worker's heartbeat from a daemon thread (a missed beat is retried at the
    next interval: the store may be briefly away)."""

    def __init__(self, coordinator: Coordinator, hostname: str) -> None:
        self.coordinator, self.hostname = coordinator, hostname
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="worker-heartbeat", daemon=True)

    def _run(self) -> None:
        while True:
            try:
                record(self.coordinator, self.hostname)
            except Exception as exc:
                log.warning("worker heartbeat not recorded", extra={"error": type(exc).__name__})
            if self._stop.wait(locks.WORKER_HEARTBEAT_EVERY):
                return

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            forget(self.coordinator, self.hostname)
        except Exception:  # noqa: S110 - the key goes stale on its own
            pass
