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
from service.settings import Settings, load_settings_or_exit

# Exit codes: 0 done, 1 the command failed, 2 bad usage or a bad setting, 3 a partial sync.
EXIT_FAILED, EXIT_PARTIAL = 1, 3


class Fail(click.ClickException):
    """A one-line failure, printed as `linksync: <message>`, exit 1."""

    exit_code = EXIT_FAILED

    def show(self, file: Any = None) -> None:
        click.echo(f"linksync: {self.format_message()}", err=True)


def _settings() -> Settings:
    """The settings, or one line naming the bad variable and exit 2."""
    return load_settings_or_exit()


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
    """Sync ACCOUNT_ID now, in the foreground, showing each phase.

    Exit status: 0 when the run succeeded, 3 when it was partial (some links are not as the
    source says: see the error), 1 when it failed or could not start."""
    from service.connections.queries import get_connection
    from service.errors import DomainError
    from service.infra.models import RunStatus, SyncRun
    from service.services import Services
    from service.sync.runner import SyncBusy, run_sync

    settings = _settings()
    svc = Services(settings, enqueue=lambda *_: None)
    try:
        with svc.db.session() as session:
            connection_id = get_connection(session, account_id).id
    except DomainError as exc:
        svc.close()
        raise Fail(exc.message) from None

    bar: Any = None

    def close_bar() -> None:
        nonlocal bar
        if bar is not None:
            bar.__exit__(None, None, None)
            bar = None

    def phase(name: str, total: int) -> None:
        close_bar()
        if name == "reconcile":
            click.echo("Reconciling: listing Close's links...", err=True)
        elif name == "read":
            click.echo(f"Reading the source for {account_id}...", err=True)
        elif name == "apply" and not total:
            click.echo("Applying: nothing to change in Close", err=True)
        elif name == "apply":
            bar = click.progressbar(
                length=total, label=f"Applying {total} change(s) to Close", file=sys.stderr
            )
            bar.__enter__()

    def progress(done: int, _total: int) -> None:
        if bar is not None:
            bar.update(done - bar.pos)

    try:
        run_ids = run_sync(
            svc,
            connection_id,
            trigger="cli",
            reconcile=reconcile,
            on_progress=progress,
            on_phase=phase,
        )
    except SyncBusy:
        raise Fail(
            "a sync of this account is running in a worker; it will pick up the change"
        ) from None
    finally:
        close_bar()
    status = RunStatus.FAILED
    with svc.db.session() as session:
        for run_id in run_ids:
            run = session.get(SyncRun, run_id)
            assert run is not None
            status = run.status
            took = (
                f" in {(run.finished_at - run.started_at).total_seconds():.1f} s"
                if run.started_at and run.finished_at
                else ""
            )
            click.echo(
                f"run {run.id} {run.status}{took}: created {run.created}, updated {run.updated}, "
                f"deleted {run.deleted}, unchanged {run.unchanged}, failed {run.failed}"
                + (f" - {run.error}" if run.error else "")
            )
    svc.close()
    if status == RunStatus.PARTIAL:
        sys.exit(EXIT_PARTIAL)
    if status != RunStatus.SUCCEEDED:
        sys.exit(EXIT_FAILED)


@main.command("connect-link")
@click.argument("account_id")
@click.option(
    "--manage", is_flag=True, help="A one-time link to the status page of a connected account."
)
def connect_link(account_id: str, manage: bool) -> None:
    """Print a fresh connect link for ACCOUNT_ID (or, with --manage, a status-page link)."""
    from service.connections.queries import get_connection
    from service.connections.sessions import create_connect_session, mint_manage_link
    from service.errors import DomainError
    from service.services import Services

    settings = _settings()
    svc = Services(settings, enqueue=lambda *_: None)
    try:
        with svc.db.session() as session:
            if manage:
                manage_session, url = mint_manage_link(
                    session, settings, get_connection(session, account_id)
                )
                expires_at = manage_session.expires_at
            else:
                connect, _token, url = create_connect_session(session, settings, account_id)
                expires_at = connect.expires_at
    except DomainError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        svc.close()
    click.echo(url)
    click.echo(f"valid until {expires_at:%Y-%m-%d %H:%M} UTC, for one browser", err=True)


@main.command()
@click.argument("account_id")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON instead of a table.")
def coverage(account_id: str, as_json: bool) -> None:
    """Which of ACCOUNT_ID's team members have links in Close ("covered N of M")."""
    import json

    from service.connections.queries import coverage as read_coverage
    from service.errors import DomainError
    from service.services import Services

    svc = Services(_settings(), enqueue=lambda *_: None)
    try:
        with svc.db.session() as session:
            report = read_coverage(session, account_id)
    except DomainError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        svc.close()
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
        return
    totals = report["totals"]
    click.echo(
        f"covered {totals['covered']} of {totals['total']} "
        f"({totals['connected']} connected, {totals['mapped_only']} through shared links only, "
        f"{totals['unmatched']} not in the Close org)"
    )
    for member in report["members"]:
        user = member["close_user"]
        click.echo(
            f"  {'✓' if member['covered'] else '✗'} {member['name'] or member['member_id']}"
            f" <{member['email'] or '-'}>: "
            + (f"Close user {user['name'] or user['id']}" if user else "no Close user")
            + f", {member['links']} link(s), {len(member['shared_mappings'])} mapping(s)"
            + (f" - {member['reason']}" if member["reason"] else "")
        )
    if not report["shared_links"]["available"] and report["shared_links"]["reason"]:
        click.echo(f"shared links: {report['shared_links']['reason']}")


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
@click.option(
    "--state-path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Keep users, grants, tokens and links in this JSON file across restarts "
    "(default: in memory only).",
)
def sandbox(
    host: str, port: int, token_ttl: float, rate_limit: float, state_path: Path | None
) -> None:
    """Run the built-in Close sandbox."""
    from service.sandbox.server import run_sandbox
    from service.sandbox.state import SandboxConfig

    kept = f" (state kept in {state_path})" if state_path else " (state in memory)"
    click.echo(f"Close sandbox on http://{host}:{port}{kept}")
    if state_path:
        state_path.parent.mkdir(parents=True, exist_ok=True)
    run_sandbox(
        host,
        port,
        SandboxConfig(access_token_ttl=token_ttl, rate_limit_per_token=rate_limit),
        state_path=state_path,
    )


@main.command("demo-source")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8200, show_default=True, type=int)
@click.option("--data", type=click.Path(path_type=Path), default=None)
@click.option(
    "--linksync-url",
    default=None,
    help="The LinkSync web app the demo settings page connects through (default: PUBLIC_URL).",
)
@click.option("--account", default="demo-account", show_default=True, help="The page's account.")
def demo_source(
    host: str, port: int, data: Path | None, linksync_url: str | None, account: str
) -> None:
    """Run the built-in demo event-type source, with the demo integrator's settings page
    (/settings: the connect widget, with the first of API_KEYS) and its event receiver
    (POST /_demo/events, verified with INTEGRATOR_WEBHOOK_SECRET)."""
    from service.demo_source.integrator import DemoIntegrator
    from service.demo_source.server import run_demo_source

    settings = _settings()
    path = data or settings.INSTANCE_PATH / "demo-source.json"
    integrator = DemoIntegrator(
        linksync_url=linksync_url or settings.PUBLIC_URL,
        api_key=settings.API_KEYS[0] if settings.API_KEYS else None,
        webhook_secret=settings.INTEGRATOR_WEBHOOK_SECRET,
        account_id=account,
    )
    click.echo(f"demo source on http://{host}:{port} (data: {path}; settings page: /settings)")
    run_demo_source(host, port, path, settings.SOURCE_TOKEN, integrator)


@main.command()
@click.option("--bind", default=None, help="host:port (default: GUNICORN_BIND or 0.0.0.0:5000).")
@click.option("--workers", default=None, type=int, help="Processes (default: GUNICORN_WORKERS).")
def web(bind: str | None, workers: int | None) -> None:
    """Run the web app under gunicorn with service/gunicorn_conf.py (as compose does)."""
    _settings()  # a bad setting: one line here, not a traceback per gunicorn worker
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
    _settings()
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
    _settings()
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
    target = url or f"{settings.PUBLIC_URL}/webhooks/source"
    try:
        response = requests.post(
            target,
            data=body,
            headers={"Content-Type": "application/json", "X-LinkSync-Signature": header},
            timeout=10,
        )
    except requests.RequestException as exc:
        raise Fail(
            f"{target} unreachable: {type(exc).__name__} (is the web app running?)"
        ) from None
    answer = f"{response.status_code} {' '.join(response.text.split())}"
    if not response.ok:
        raise Fail(f"{target} refused the webhook: {answer}")
    click.echo(answer)


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
@click.option("--port", default=5000, show_default=True, type=int, help="The web app's port.")
@click.option("--sandbox-port", default=8100, show_default=True, type=int)
@click.option("--source-port", default=8200, show_default=True, type=int)
@click.option("--account", default="demo-account", show_default=True)
def dev(port: int, sandbox_port: int, source_port: int, account: str) -> None:
    """Everything in one command with embedded defaults: SQLite, no Redis, the Close
    sandbox and the demo source. Ctrl-C stops it all."""
    from service.dev import DevError, run_dev

    try:
        run_dev(port=port, sandbox_port=sandbox_port, source_port=source_port, account=account)
    except DevError as exc:
        raise Fail(str(exc)) from None


if __name__ == "__main__":
    main()
