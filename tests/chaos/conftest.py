"""The chaos suite's stack: PostgreSQL, a Redis server of its own (so it can be restarted),
the sandbox and the source, and real Celery workers that get killed.

`CHAOS_FAULT_SECONDS` sets how long the fault windows last (default 120 for `make chaos`;
`make test` sets 8). A summary table is printed at the end of the run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib

from service.infra.models import Connection
from service.services import Services
from service.settings import SANDBOX_CLIENT_ID, Settings
from service.sync.triggers import request_sync
from tests.conftest import CHAOS_RESULTS_ENV, WorkerProcess, wait_until

FAULT_SECONDS = float(os.environ.get("CHAOS_FAULT_SECONDS", "120"))


@dataclass
class Result:
    scenario: str
    duration: float = 0.0
    close_calls: int = 0
    links_checked: int = 0
    lost: int = -1
    notes: str = ""


def report(result: Result) -> None:
    """Add a row to the chaos summary. The rows go to a file that the controlling pytest
    process prints at the end (tests/conftest.py), so the table appears with pytest-xdist too,
    whichever worker process ran the scenario."""
    path = os.environ.get(CHAOS_RESULTS_ENV)
    if path:
        with open(path, "a") as handle:
            handle.write(json.dumps(dataclasses.asdict(result)) + "\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A throw-away redis-server we may kill and restart (nothing persisted: state is lost)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis_lib.Redis.from_url(self.url)
        wait_until(lambda: _pings(client), timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def restart(self) -> None:
        self.stop()
        time.sleep(0.5)
        self.start()


def _pings(client: redis_lib.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis_lib.RedisError:
        return False


@pytest.fixture
def chaos_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@dataclass
class Chaos:
    svc: Services
    sandbox: Any
    source: Any
    start_worker: Callable[..., WorkerProcess]
    redis: RedisServer
    accounts: dict[int, str] = field(default_factory=dict)

    def trigger(self, connection_ids: list[int], trigger: str = "manual") -> None:
        with self.svc.db.session() as session:
            for cid in connection_ids:
                connection = session.get(Connection, cid)
                assert connection is not None
                request_sync(session, self.svc, connection, trigger)

    def lost(
        self, desired: dict[str, dict[str, dict[str, Any]]], user_of: dict[str, str]
    ) -> tuple[int, int]:
        """(lost, checked): desired links missing or stale in Close, stale extras, duplicates."""
        lost = checked = 0
        by_user: dict[str, list[dict[str, Any]]] = {}
        for link in self.sandbox.state.links():
            if link["source"] == "THIRD_PARTY" and link["oauth_client_id"] == SANDBOX_CLIENT_ID:
                by_user.setdefault(link["user_id"], []).append(link)
        for account, wanted in desired.items():
            links = by_user.get(user_of[account], [])
            seen: dict[str, int] = {}
            for link in links:
                seen[link["source_id"]] = seen.get(link["source_id"], 0) + 1
            lost += sum(n - 1 for n in seen.values())  # duplicates
            lost += sum(1 for sid in seen if sid not in wanted)  # stale
            actual = {link["source_id"]: link for link in links}
            for sid, item in wanted.items():
                checked += 1
                link = actual.get(sid)
                if link is None or link["name"] != item["name"] or link["url"] != item["url"]:
                    lost += 1
        return lost, checked


@pytest.fixture
def chaos(
    make_settings: Callable[..., Settings],
    pg_url: str,
    chaos_redis: RedisServer,
    sandbox: Any,
    source: Any,
    start_worker: Callable[..., WorkerProcess],
) -> Iterator[Chaos]:
    from service.jobs import celery_enqueue

    settings = make_settings(
        DATABASE_URL=pg_url,
        REDIS_URL=chaos_redis.url,
        SYNC_LOCK_TTL_SECONDS=6,
        CLOSE_TIMEOUT_SECONDS=2.0,
        SCHEDULER_TICK_SECONDS=2,
    )
    svc = Services(settings, enqueue=celery_enqueue(settings))
    yield Chaos(svc, sandbox, source, start_worker, chaos_redis)
    svc.close()
