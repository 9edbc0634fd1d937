"""The real stack for a benchmark: PostgreSQL, Redis, the Close sandbox and the demo source as
processes, Celery workers, and (where needed) the web app under gunicorn. Everything listens on
127.0.0.1 only and is stopped when the block ends."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import redis
import requests
from cryptography.fernet import Fernet
from sqlalchemy import insert, select, text

from service.infra import migrate
from service.infra.crypto import TokenCipher
from service.infra.db import Database, utcnow
from service.infra.models import Connection, ConnectionStatus, SyncRun
from service.settings import SANDBOX_CLIENT_ID, Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_BASE = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379")
API_KEY = "bench-api-key-0123456789"
WEBHOOK_SECRET = "bench-webhook-secret"
# Sync tasks started by bench.worker_app's workers (originals, redelivered copies, retries).
SYNC_DELIVERIES_KEY = "bench:sync-task-starts"


# The claim the test suite's fixtures also take (tests/conftest.py), so a benchmark and a test
# session on one machine never share (or flush) one database number.
REDIS_CLAIM = "linksync-test-claim:"


def claim_redis_db() -> int:
    """A Redis database number of our own (the tests claim from 15 down, we from 1 up)."""
    client = redis.Redis.from_url(REDIS_BASE)
    for number in range(1, 16):
        if client.set(f"{REDIS_CLAIM}{number}", f"bench {os.getpid()}", nx=True, ex=3600):
            return number
    raise RuntimeError("no free Redis database number for the benchmark")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


@dataclass
class Stack:
    settings: Settings
    env: dict[str, str]
    sandbox_url: str
    source_url: str
    source_file: Path
    workdir: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    web_url: str | None = None
    db: Database | None = None

    # Processes ----------------------------------------------------------------------------

    def spawn(self, args: list[str], name: str) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("ab")
        proc = subprocess.Popen(args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def start_workers(
        self, count: int = 2, threads: int = 8, app: str = "workers.main"
    ) -> list[subprocess.Popen[bytes]]:
        """`app`: the Celery app module (bench.worker_app adds the bench's broker overrides)."""
        started = []
        for n in range(count):
            started.append(
                self.spawn(
                    [
                        sys.executable,
                        "-m",
                        "celery",
                        "-A",
                        app,
                        "worker",
                        "--loglevel=WARNING",
                        "--pool=threads",
                        f"--concurrency={threads}",
                        "--without-gossip",
                        "--without-mingle",
                        "--without-heartbeat",
                        "-n",
                        f"bench{n}-{secrets.token_hex(3)}@%h",
                    ],
                    f"worker{n}",
                )
            )
        time.sleep(3.0)  # workers connect to the broker
        return started

    def stop_procs(self, procs: list[subprocess.Popen[bytes]]) -> None:
        """Stop these processes (e.g. one round's workers) and forget them."""
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            self.procs.remove(proc)

    def start_web(self, workers: int = 2) -> str:
        port = free_port()
        self.spawn(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                "python:service.gunicorn_conf",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(workers),
                "--access-logfile",
                "/dev/null",
                "service.wsgi:app",
            ],
            "web",
        )
        self.web_url = f"http://127.0.0.1:{port}"
        wait_http(self.web_url + "/healthz")
        return self.web_url

    # Sandbox and source ---------------------------------------------------------------------

    def sandbox(self, path: str, body: dict[str, Any] | None = None) -> Any:
        response = requests.post(self.sandbox_url + path, json=body or {}, timeout=30)
        response.raise_for_status()
        return response.json()

    def calls(self) -> dict[str, int]:
        return dict(requests.get(self.sandbox_url + "/_sandbox/calls", timeout=30).json())

    def write_source(self, accounts: dict[str, list[dict[str, Any]]]) -> None:
        """Replace the source's data (the demo source re-reads the file when it changes)."""
        tmp = self.source_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"accounts": accounts}))
        os.replace(tmp, self.source_file)
        time.sleep(0.05)

    def source_stats(self) -> dict[str, int]:
        """The demo source's answers since the last reset, by status ("200" per page)."""
        return dict(requests.get(self.source_url + "/_demo/stats", timeout=30).json())

    def reset_source_stats(self) -> None:
        requests.post(self.source_url + "/_demo/stats/reset", timeout=30).raise_for_status()

    def patch_event_type(self, account: str, event_type_id: str, **fields: Any) -> None:
        response = requests.patch(
            f"{self.source_url}/_demo/accounts/{account}/event-types/{event_type_id}",
            json=fields,
            timeout=10,
        )
        response.raise_for_status()

    # Connections ----------------------------------------------------------------------------

    def create_connections(self, specs: list[tuple[str, str, str]]) -> dict[str, int]:
        """specs: (account_id, close user id, close org id). Tokens issued by the sandbox."""
        orgs = sorted({org for _, _, org in specs})
        self.sandbox(
            "/_sandbox/users",
            {
                "orgs": [{"id": org, "name": f"Org {org}"} for org in orgs],
                "users": [{"id": user, "organizations": [org]} for _, user, org in specs],
            },
        )
        cipher = TokenCipher(self.settings.TOKEN_ENCRYPTION_KEYS)
        rows = []
        now = utcnow()
        for account, user, org in specs:
            tokens = self.sandbox(
                "/_sandbox/issue-tokens",
                {"client_id": SANDBOX_CLIENT_ID, "user_id": user, "organization_id": org},
            )
            from datetime import timedelta

            expires = now + timedelta(seconds=float(tokens["expires_in"]))
            rows.append(
                {
                    "account_id": account,
                    "status": ConnectionStatus.ACTIVE,
                    "close_user_id": user,
                    "close_org_id": org,
                    "access_token_enc": cipher.encrypt(tokens["access_token"]),
                    "refresh_token_enc": cipher.encrypt(tokens["refresh_token"]),
                    "token_expires_at": expires,
                    "token_refresh_at": expires - timedelta(seconds=120),
                    "token_generation": 1,
                    "next_sync_at": now + timedelta(days=1),
                    "next_reconcile_at": now + timedelta(days=1),
                    "created_at": now,
                    "updated_at": now,
                }
            )
        assert self.db is not None
        with self.db.session() as session:
            session.execute(insert(Connection), rows)
            found = session.execute(
                select(Connection.account_id, Connection.id).where(
                    Connection.account_id.in_([s[0] for s in specs])
                )
            ).all()
        return {account: cid for account, cid in found}

    def runs_finished(self, since_id: int) -> list[SyncRun]:
        assert self.db is not None
        with self.db.session() as session:
            return list(
                session.scalars(
                    select(SyncRun)
                    .where(SyncRun.id > since_id, SyncRun.finished_at.is_not(None))
                    .order_by(SyncRun.id)
                )
            )

    def max_run_id(self) -> int:
        assert self.db is not None
        with self.db.session() as session:
            return int(session.scalar(text("SELECT COALESCE(MAX(id), 0) FROM sync_runs")) or 0)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()


@contextmanager
def stack(
    *,
    latency_ms: float = 40,
    rate_per_token: float = 20,
    rate_per_org: float | None = None,
    close_concurrency: int = 4,
    extra_env: dict[str, str] | None = None,
    embedded: bool = False,
) -> Iterator[Stack]:
    """embedded: the zero-config default instead of PostgreSQL and Redis (a SQLite database
    and kombu's SQLite broker under the stack's workdir, database locks), as `make run` has."""
    name = f"linksync_bench_{secrets.token_hex(4)}"
    workdir = Path(tempfile.mkdtemp(prefix="linksync-bench-"))
    if embedded:
        db_url, redis_url = f"sqlite:///{workdir / 'linksync.db'}", ""
    else:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
        db_url = f"{base}/{name}"
        redis_db = claim_redis_db()
        redis_url = f"{REDIS_BASE}/{redis_db}"
        redis.Redis.from_url(redis_url).flushdb()
    sandbox_port, source_port = free_port(), free_port()
    source_file = workdir / "source.json"
    source_file.write_text('{"accounts": {}}')
    env = {
        **os.environ,
        "LINKSYNC_ENV": "test",
        "INSTANCE_PATH": str(workdir),
        "DATABASE_URL": db_url,
        **({"REDIS_URL": redis_url} if redis_url else {}),
        "SECRET_KEY": "bench",
        "TOKEN_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "API_KEYS": API_KEY,
        "WEBHOOK_SECRET": WEBHOOK_SECRET,
        "CLOSE_SANDBOX_URL": f"http://127.0.0.1:{sandbox_port}",
        "SOURCE_URL": f"http://127.0.0.1:{source_port}",
        "SOURCE_TOKEN": "bench-source-token",
        "CLOSE_CONCURRENCY": str(close_concurrency),
        # The operator configures Close's per-token limit; headers only ever slow us below it.
        "CLOSE_RATE_PER_SECOND": str(rate_per_token),
        "LOG_LEVEL": "WARNING",
        "WEBHOOK_RATE_LIMIT_PER_MINUTE": "100000",
        "PYTHONPATH": str(ROOT),
        **(extra_env or {}),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if not redis_url:
        env.pop("REDIS_URL", None)
    settings = load_settings(**{k: v for k, v in env.items() if k in Settings.model_fields})
    migrate.upgrade(db_url)
    s = Stack(
        settings,
        env,
        f"http://127.0.0.1:{sandbox_port}",
        f"http://127.0.0.1:{source_port}",
        source_file,
        workdir,
    )
    s.db = Database(db_url)
    try:
        s.spawn(
            [
                sys.executable,
                "-m",
                "service.cli",
                "sandbox",
                "--port",
                str(sandbox_port),
                "--rate-limit",
                str(rate_per_token),
            ],
            "sandbox",
        )
        s.spawn(
            [
                sys.executable,
                "-m",
                "service.cli",
                "demo-source",
                "--port",
                str(source_port),
                "--data",
                str(source_file),
            ],
            "source",
        )
        wait_http(s.sandbox_url + "/_sandbox/calls")
        wait_http(s.source_url + "/_demo/stats")
        config: dict[str, Any] = {"latency_ms": latency_ms, "rate_limit_per_token": rate_per_token}
        if rate_per_org:
            config["rate_limit_per_org"] = rate_per_org
        s.sandbox("/_sandbox/config", config)
        yield s
    finally:
        s.stop()
        s.db.dispose()
        if not embedded:
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            redis.Redis.from_url(redis_url).flushdb()
            redis.Redis.from_url(REDIS_BASE).delete(f"{REDIS_CLAIM}{redis_db}")
