"""`linksync dev`: the whole service on one machine with nothing configured.

Starts the Close sandbox, the demo source, a Celery worker and beat (on the embedded SQLite
broker unless REDIS_URL is set) and the web app, each in its own process, prints the URLs and a
ready-made connect link, and stops everything on Ctrl-C.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import requests

from service.infra import migrate
from service.jobs import WORKER_FLAGS
from service.settings import Settings, load_settings

SANDBOX_PORT = 8100
SOURCE_PORT = 8200


def _wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=1).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise click.ClickException(f"{url} did not come up within {timeout:.0f}s")


def run_dev(*, port: int, account: str) -> None:
    os.environ.setdefault("PUBLIC_URL", f"http://127.0.0.1:{port}")
    os.environ.setdefault("LOG_FORMAT", "console")
    settings = load_settings()
    if settings.LINKSYNC_ENV.value == "production":
        raise click.ClickException("linksync dev refuses to run with LINKSYNC_ENV=production")
    env = dict(os.environ)
    # The generated dev secrets are fixed now: every child sees the same ones.
    env.update(
        SECRET_KEY=settings.SECRET_KEY or "",
        TOKEN_ENCRYPTION_KEYS=",".join(settings.TOKEN_ENCRYPTION_KEYS),
        API_KEYS=",".join(settings.API_KEYS),
        WEBHOOK_SECRET=settings.WEBHOOK_SECRET or "",
    )
    # Worker and web share Prometheus metrics through files (multiprocess mode).
    metrics_dir = settings.INSTANCE_PATH / "metrics"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir.resolve())
    migrate.upgrade(settings.database_url)
    python = sys.executable
    procs: list[subprocess.Popen[bytes]] = []

    def _stop(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    # Ctrl-C (SIGINT) and SIGTERM both stop everything cleanly.
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)

    def spawn(*args: str) -> None:
        procs.append(subprocess.Popen([python, *args], env=env))  # noqa: S603

    try:
        if settings.uses_close_sandbox:
            spawn("-m", "service.cli", "sandbox", "--port", str(SANDBOX_PORT))
            _wait_http(f"{settings.CLOSE_SANDBOX_URL}/_sandbox/calls")
        demo_data = settings.INSTANCE_PATH / "demo-source.json"
        if settings.SOURCE_URL.endswith(f":{SOURCE_PORT}"):
            spawn(
                "-m",
                "service.cli",
                "demo-source",
                "--port",
                str(SOURCE_PORT),
                "--data",
                str(demo_data),
            )
            _wait_http(f"{settings.SOURCE_URL}/_demo/stats")
        celery = ["-m", "celery", "-A", "workers.main"]
        spawn(*celery, "worker", "--loglevel=INFO", "--concurrency=2", *WORKER_FLAGS)
        spawn(
            *celery,
            "beat",
            "--loglevel=INFO",
            "--schedule",
            str(settings.INSTANCE_PATH / "beat-schedule"),
        )
        spawn("-m", "flask", "--app", "service.wsgi:app", "run", "--port", str(port), "--no-reload")
        _wait_http(f"http://127.0.0.1:{port}/healthz")
        connect_url = _connect_link(settings.PUBLIC_URL, settings.API_KEYS[0], account)
        _banner(settings, port, account, connect_url, demo_data)
        while all(proc.poll() is None for proc in procs):
            time.sleep(0.5)
        raise click.ClickException("a child process exited; stopping everything")
    except KeyboardInterrupt:
        click.echo("\nstopping...")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
        click.echo("stopped")


def _connect_link(public_url: str, api_key: str, account: str) -> str:
    response = requests.post(
        f"{public_url}/api/v1/connect-sessions",
        json={"account_id": account},
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=10,
    )
    response.raise_for_status()
    return str(response.json()["connect_url"])


def _banner(s: Settings, port: int, account: str, connect_url: str, demo: Path) -> None:
    lines = [
        "",
        "LinkSync for Close is running (embedded defaults)",
        f"  web app         http://127.0.0.1:{port}   (health: /healthz, ready: /readyz)",
        f"  Close sandbox   {s.CLOSE_SANDBOX_URL}",
        f"  demo source     {s.SOURCE_URL}   (data file: {demo})",
        f"  API docs        http://127.0.0.1:{port}/api/v1/openapi.json",
        f"  API key         in {s.INSTANCE_PATH}/dev-api-keys (or API_KEYS)",
        "",
        f"  Connect the demo account '{account}':",
        f"    {connect_url}",
        "",
        f"  After editing {demo}, push the change at once with:",
        f"    linksync webhook {account}",
        "",
        "  Ctrl-C stops everything.",
        "",
    ]
    click.echo("\n".join(lines))
