"""The `linksync` command line."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from service.jobs import WORKER_FLAGS
from service.settings import Settings, SettingsError, load_settings


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
def main() -> None:
    """LinkSync for Close: keep an integrator's event types in sync with Close."""


# Database ------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """Database schema commands."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply migrations up to REVISION."""
    from service.infra import migrate

    settings = _settings()
    migrate.upgrade(settings.database_url, revision)
    click.echo(f"database at {revision}")


@db.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    """Revert migrations down to REVISION (e.g. base)."""
    from service.infra import migrate

    migrate.downgrade(_settings().database_url, revision)
    click.echo(f"database at {revision}")


# Sync ----------------------------------------------------------------------------------


@main.command()
@click.argument("account_id")
@click.option("--reconcile", is_flag=True, help="Also list Close's links and repair drift.")
def sync(account_id: str, reconcile: bool) -> None:
    """Sync ACCOUNT_ID now, in the foreground, with progress."""
    from service.connections.queries import get_connection
    from service.errors import DomainError
    from service.infra.models import SyncRun
    from service.services import Services
    from service.sync.runner import SyncBusy, run_sync

    settings = _settings()
    svc = Services(settings, enqueue=lambda *_: None)
    try:
        with svc.db.session() as session:
            connection_id = get_connection(session, account_id).id
    except DomainError as exc:
        raise click.ClickException(exc.message) from None

    bar: Any = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None and total:
            bar = click.progressbar(length=total, label="Applying changes to Close")
            bar.__enter__()
        if bar is not None:
            bar.update(done - bar.pos)

    try:
        run_ids = run_sync(
            svc, connection_id, trigger="cli", reconcile=reconcile, on_progress=progress
        )
    except SyncBusy:
        raise click.ClickException(
            "a sync of this account is running in a worker; it will pick up the change"
        ) from None
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    with svc.db.session() as session:
        for run_id in run_ids:
            run = session.get(SyncRun, run_id)
            assert run is not None
            click.echo(
                f"run {run.id}: {run.status} - created {run.created}, updated {run.updated}, "
                f"deleted {run.deleted}, unchanged {run.unchanged}, failed {run.failed}"
                + (f"\n  {run.error}" if run.error else "")
            )
    svc.close()


# Keys ----------------------------------------------------------------------------------


@main.group()
def keys() -> None:
    """Token-encryption keys."""


@keys.command("generate")
def keys_generate() -> None:
    """Print a new key to put first in TOKEN_ENCRYPTION_KEYS."""
    from cryptography.fernet import Fernet

    click.echo(Fernet.generate_key().decode())


@keys.command("rotate")
def keys_rotate() -> None:
    """Re-encrypt every stored token with the first key; older keys can then be dropped."""
    from service.connections.key_rotation import rotate_all

    count, undecryptable = rotate_all(_settings())
    click.echo(f"re-encrypted the tokens of {count} connection(s) with the newest key")
    if undecryptable:
        ids = ", ".join(str(i) for i in undecryptable[:20])
        raise click.ClickException(
            f"{len(undecryptable)} connection(s) have tokens no configured key decrypts "
            f"(ids: {ids}); keep their old key in TOKEN_ENCRYPTION_KEYS and run again"
        )


@main.group()
def operator() -> None:
    """Operator console credentials."""


@operator.command("hash-password")
@click.password_option(help="The operator's password (asked twice when omitted).")
def operator_hash_password(password: str) -> None:
    """Print a hash for OPERATOR_PASSWORD_HASH."""
    from service.web.admin.auth import hash_password

    click.echo(hash_password(password))


# Servers -------------------------------------------------------------------------------


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8100, show_default=True, type=int)
@click.option("--token-ttl", default=3600.0, show_default=True, help="Access-token lifetime (s).")
@click.option("--rate-limit", default=20.0, show_default=True, help="Requests/s per token.")
def sandbox(host: str, port: int, token_ttl: float, rate_limit: float) -> None:
    """Run the built-in Close sandbox."""
    from service.sandbox.server import run_sandbox
    from service.sandbox.state import SandboxConfig

    click.echo(f"Close sandbox on http://{host}:{port}")
    run_sandbox(
        host, port, SandboxConfig(access_token_ttl=token_ttl, rate_limit_per_token=rate_limit)
    )


@main.command("demo-source")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8200, show_default=True, type=int)
@click.option("--data", type=click.Path(path_type=Path), default=None)
def demo_source(host: str, port: int, data: Path | None) -> None:
    """Run the built-in demo event-type source."""
    from service.demo_source.server import run_demo_source

    settings = _settings()
    path = data or settings.INSTANCE_PATH / "demo-source.json"
    click.echo(f"demo source on http://{host}:{port} (data: {path})")
    run_demo_source(host, port, path, settings.SOURCE_TOKEN)


@main.command()
@click.option("--bind", default=None, help="host:port (default: GUNICORN_BIND or 0.0.0.0:5000).")
@click.option("--workers", default=None, type=int, help="Processes (default: GUNICORN_WORKERS).")
def web(bind: str | None, workers: int | None) -> None:
    """Run the web app under gunicorn with service/gunicorn_conf.py (as compose does)."""
    if bind:
        os.environ["GUNICORN_BIND"] = bind
    if workers:
        os.environ["GUNICORN_WORKERS"] = str(workers)
    os.execvp(  # noqa: S606
        sys.executable,
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "python:service.gunicorn_conf",
            "service.wsgi:app",
        ],
    )


@main.command()
@click.option("--concurrency", default=4, show_default=True, type=int)
def worker(concurrency: int) -> None:
    """Run a Celery worker."""
    os.execvp(  # noqa: S606
        sys.executable,
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers.main",
            "worker",
            "--loglevel=INFO",
            f"--concurrency={concurrency}",
            *WORKER_FLAGS,
        ],
    )


@main.command()
def beat() -> None:
    """Run Celery beat (exactly one per deployment)."""
    os.execvp(  # noqa: S606
        sys.executable,
        [sys.executable, "-m", "celery", "-A", "workers.main", "beat", "--loglevel=INFO"],
    )


# Demo helpers --------------------------------------------------------------------------


@main.command()
@click.argument("account_id")
@click.option("--url", default=None, help="Webhook URL (default: PUBLIC_URL/webhooks/source).")
def webhook(account_id: str, url: str | None) -> None:
    """Send a signed event_types.changed webhook for ACCOUNT_ID (as the integrator would)."""
    import uuid

    import requests

    from service.api.signatures import sign

    settings = _settings()
    body = json.dumps(
        {"id": f"evt_{uuid.uuid4().hex}", "type": "event_types.changed", "account_id": account_id}
    ).encode()
    timestamp = int(time.time())
    header = f"t={timestamp},v1={sign(settings.WEBHOOK_SECRET or '', timestamp, body)}"
    response = requests.post(
        url or f"{settings.PUBLIC_URL}/webhooks/source",
        data=body,
        headers={"Content-Type": "application/json", "X-LinkSync-Signature": header},
        timeout=10,
    )
    click.echo(f"{response.status_code} {response.text.strip()}")


@main.command()
def doctor() -> None:
    """Check settings, database, migrations, broker, Close and clock; print a table."""
    from service.doctor import run_checks

    results = run_checks()
    width = max(len(name) for name, _, _ in results)
    for name, ok, detail in results:
        click.echo(f"{'PASS' if ok else 'FAIL'}  {name.ljust(width)}  {detail}")
    if not all(ok for _, ok, _ in results):
        sys.exit(1)


@main.command()
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--account", default="demo-account", show_default=True)
def dev(port: int, account: str) -> None:
    """Everything in one command with embedded defaults: SQLite, no Redis, the Close
    sandbox and the demo source. Ctrl-C stops it all."""
    from service.dev import run_dev

    run_dev(port=port, account=account)


if __name__ == "__main__":
    main()
