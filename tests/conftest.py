"""Shared fixtures: the real PostgreSQL and Redis, the Close sandbox and the demo source as
real HTTP servers, settings for each test, and real Celery workers in subprocesses.

Isolation: the session gets a database of its own (created from the `test` server, dropped at
the end) and a Redis database number of its own; every test uses fresh account ids, and the
sandbox and the source are reset before each test.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis as redis_lib
from cryptography.fernet import Fernet

from service.infra import migrate
from service.jobs import WORKER_FLAGS
from service.services import Services
from service.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_BASE_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
ARTIFACTS = ROOT / "test-artifacts"

API_KEY = "test-api-key-" + "a" * 20
WEBHOOK_SECRET = "test-webhook-secret"


# Real backing services ----------------------------------------------------------------


CHAOS_RESULTS_ENV = "CHAOS_SUMMARY_FILE"
CHAOS_KEY = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    """The controlling process (not an xdist worker) makes the file the chaos scenarios
    report to; workers inherit its path through the environment."""
    if hasattr(config, "workerinput") or os.environ.get(CHAOS_RESULTS_ENV):
        return
    fd, path = tempfile.mkstemp(prefix="linksync-chaos-", suffix=".jsonl")
    os.close(fd)
    os.environ[CHAOS_RESULTS_ENV] = path
    config.stash[CHAOS_KEY] = path


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    path = config.stash.get(CHAOS_KEY, None)
    if path is None:
        return
    try:
        rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line]
    finally:
        Path(path).unlink(missing_ok=True)
        os.environ.pop(CHAOS_RESULTS_ENV, None)
    if not rows:
        return
    terminalreporter.section("chaos summary")
    terminalreporter.write_line(
        f"{'scenario':<44} {'duration':>9} {'close calls':>12} {'links checked':>14} {'lost':>5}"
    )
    for r in rows:
        terminalreporter.write_line(
            f"{r['scenario']:<44} {r['duration']:>8.1f}s {r['close_calls']:>12} "
            f"{r['links_checked']:>14} {r['lost']:>5}" + (f"  {r['notes']}" if r["notes"] else "")
        )


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    name = f"linksync_test_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    url = f"{base.replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"
    migrate.upgrade(url)
    yield url
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    # A database number of our own, so concurrent runs on one machine do not meet.
    client = redis_lib.Redis.from_url(REDIS_BASE_URL)
    for number in range(15, 0, -1):
        if client.set(f"linksync-test-claim:{number}", os.getpid(), nx=True, ex=3600):
            break
    else:
        raise RuntimeError("no free Redis database number for the tests")
    url = f"{REDIS_BASE_URL}/{number}"
    db = redis_lib.Redis.from_url(url)
    db.flushdb()
    yield url
    db.flushdb()
    client.delete(f"linksync-test-claim:{number}")


@pytest.fixture
def redis_client(redis_url: str) -> redis_lib.Redis:
    return redis_lib.Redis.from_url(redis_url)


# Fakes at the edges we do not own: real HTTP servers ---------------------------------


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[Any]:
    from service.sandbox.server import SandboxServer

    server = SandboxServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def sandbox(sandbox_server: Any) -> Any:
    """The Close sandbox, reset to its seeded state for this test."""
    sandbox_server.state.reset()
    return sandbox_server


@pytest.fixture(scope="session")
def source_server() -> Iterator[Any]:
    from service.demo_source.app import DemoSourceStore
    from service.demo_source.server import DemoSourceServer

    store = DemoSourceStore(None)
    store.auto_create = False
    server = DemoSourceServer(store=store, token="test-source-token")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def source(source_server: Any) -> Any:
    """The integrator's source, with no faults; tests add accounts they need."""
    source_server.faults.clear()
    return source_server


# Settings, services, app ----------------------------------------------------------------


@pytest.fixture
def make_settings(tmp_path: Path, sandbox: Any, source: Any) -> Callable[..., Settings]:
    key = Fernet.generate_key().decode()

    def factory(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "LINKSYNC_ENV": "test",
            "INSTANCE_PATH": tmp_path / "instance",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'linksync.db'}",
            "REDIS_URL": None,
            "SECRET_KEY": "test-secret-key",
            "TOKEN_ENCRYPTION_KEYS": key,
            "API_KEYS": API_KEY,
            "WEBHOOK_SECRET": WEBHOOK_SECRET,
            "CLOSE_SANDBOX_URL": sandbox.url,
            "SOURCE_URL": source.url,
            "SOURCE_TOKEN": "test-source-token",
            "PUBLIC_URL": "http://127.0.0.1:5000",
            "LOG_FORMAT": "json",
        }
        values.update(overrides)
        return load_settings(**values)

    return factory


def forget_connections(url: str) -> None:
    """The session's PostgreSQL database outlives each test: drop the connections earlier
    tests left (all as the sandbox's Jane), or a new connect as her would be refused as a
    second account for one Close user; and their outbound events, or a test's deliverer
    would be busy posting other tests' events."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM event_attempts"))
        conn.execute(text("DELETE FROM events"))
        conn.execute(text("DELETE FROM connections"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def backend_settings(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings], tmp_path: Path
) -> Settings:
    """Settings on each storage backend: SQLite (embedded default) and PostgreSQL + Redis."""
    if request.param == "sqlite":
        settings = make_settings()
        migrate.upgrade(settings.database_url)
        return settings
    pg = request.getfixturevalue("pg_url")
    forget_connections(pg)
    return make_settings(DATABASE_URL=pg, REDIS_URL=request.getfixturevalue("redis_url"))


@pytest.fixture
def pg_settings(make_settings: Callable[..., Settings], pg_url: str, redis_url: str) -> Settings:
    forget_connections(pg_url)
    return make_settings(DATABASE_URL=pg_url, REDIS_URL=redis_url)


class RecordingEnqueue:
    """Collects enqueued syncs instead of sending them (for tests without a worker)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, str, int | None]] = []

    def __call__(self, connection_id: int, trigger: str, run_id: int | None) -> None:
        self.calls.append((connection_id, trigger, run_id))


@pytest.fixture
def enqueued() -> RecordingEnqueue:
    return RecordingEnqueue()


@pytest.fixture
def services(backend_settings: Settings, enqueued: RecordingEnqueue) -> Iterator[Services]:
    svc = Services(backend_settings, enqueue=enqueued)
    yield svc
    svc.close()


@pytest.fixture
def connected_account(
    services: Services, sandbox: Any, source: Any
) -> Callable[..., tuple[str, int]]:
    """A fresh account whose source holds `items` (or `count` plain event types), connected to
    the sandbox as Jane: returns (account id, connection id). The engine tests' common start."""
    from tests.helpers import connect_directly, event_type

    def make(count: int = 3, items: list[dict[str, Any]] | None = None) -> tuple[str, int]:
        account = new_account()
        source.store.put_all(
            account,
            items if items is not None else [event_type(n, account) for n in range(1, count + 1)],
        )
        return account, connect_directly(services, sandbox, account)

    return make


def new_account() -> str:
    return f"acct-{uuid.uuid4().hex[:12]}"


# Real Celery workers ------------------------------------------------------------------


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment a subprocess needs to rebuild these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLOSE_", "SOURCE_"))}
    for name, value in settings.model_dump().items():
        if value is None:
            env.pop(name, None)
            continue
        if isinstance(value, list):
            value = ",".join(value)
        env[name] = str(value)
    env["PYTHONPATH"] = str(ROOT)
    return env


class WorkerProcess:
    def __init__(
        self,
        settings: Settings,
        log_path: Path,
        concurrency: int = 2,
        wrapper: list[str] | None = None,
        beat: bool = False,
    ) -> None:
        self.settings = settings
        self.log_path = log_path
        self.concurrency = concurrency
        self.wrapper = wrapper or []  # e.g. ["faketime", "-f", "+120s"]
        self.beat = beat  # embed celery beat (-B): the scheduler tick runs in this process
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> WorkerProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "workers.main",
                "worker",
                "--loglevel=INFO",
                f"--concurrency={self.concurrency}",
                *WORKER_FLAGS,
                "-n",
                f"test-{uuid.uuid4().hex[:6]}@%h",
                *(
                    ["-B", "--schedule", str(self.log_path.with_suffix(".beat"))]
                    if self.beat
                    else []
                ),
            ],
            cwd=ROOT,
            env=settings_env(self.settings),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"worker exited:\n{self.log_path.read_text()[-3000:]}")
            if "ready." in self.log_path.read_text(errors="replace"):
                return
            time.sleep(0.1)
        raise RuntimeError(f"worker not ready:\n{self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    workers: list[WorkerProcess] = []

    def start(
        settings: Settings,
        concurrency: int = 2,
        wrapper: list[str] | None = None,
        beat: bool = False,
    ) -> WorkerProcess:
        worker = WorkerProcess(
            settings, tmp_path / f"worker-{len(workers)}.log", concurrency, wrapper, beat
        )
        workers.append(worker)
        return worker.start()

    yield start
    for worker in workers:
        worker.stop()


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)
