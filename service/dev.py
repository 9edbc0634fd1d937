"""`linksync dev`: the whole service on one machine with nothing configured.

Starts the Close sandbox (its state kept in `instance/sandbox-state.json`, so a restart keeps
Close's grants, tokens and links as the SQLite database keeps ours), the demo source, a Celery
worker and beat (on the embedded SQLite broker unless REDIS_URL is set) and the web app, each in
its own process with its output in `instance/logs/<name>.log`. When all are up it prints one
summary, last: the URLs, the operator console's login, a ready-made connect link and how to stop.
Ctrl-C (or SIGTERM) stops everything. A second `linksync dev` on the same instance folder, or
one whose ports are taken, refuses in one line before starting anything.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import click
import requests

from service.infra import migrate
from service.jobs import WORKER_FLAGS
from service.settings import Settings, load_settings_or_exit
from service.web.admin.auth import hash_password, verify_password

DEV_OPERATOR = "admin"
LOCAL = "http://127.0.0.1"
DEMO_EVENTS_PATH = "/_demo/events"  # the demo integrator's event receiver (demo source)
DEMO_SETTINGS_PATH = "/settings"  # the demo integrator's settings page (demo source)


class DevError(Exception):
    """`linksync dev` cannot start or keep running; the message is one line for the user."""


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path


@dataclass(frozen=True)
class Operator:
    username: str
    password: str | None  # None: the operator's own OPERATOR_* settings, not shown
    kept_in: Path | None = None


def run_dev(*, port: int, sandbox_port: int, source_port: int, account: str) -> None:
    settings = _dev_settings(port, sandbox_port, source_port)
    if settings.LINKSYNC_ENV.value == "production":
        raise DevError("linksync dev refuses to run with LINKSYNC_ENV=production")
    instance = settings.INSTANCE_PATH
    with _single_instance(instance / "dev.pid"):
        sandbox_url, source_url = f"{LOCAL}:{sandbox_port}", f"{LOCAL}:{source_port}"
        run_sandbox = settings.uses_close_sandbox and sandbox_url == settings.CLOSE_SANDBOX_URL
        run_source = source_url == settings.SOURCE_URL
        _check_ports_free(
            [("web app", port, "--port")]
            + ([("Close sandbox", sandbox_port, "--sandbox-port")] if run_sandbox else [])
            + ([("demo source", source_port, "--source-port")] if run_source else [])
        )
        env = _child_env(settings)
        operator = _operator(settings, env)
        migrate.upgrade(settings.database_url)
        _run_children(
            settings,
            env,
            operator,
            port=port,
            account=account,
            sandbox=run_sandbox,
            source=run_source,
        )


def _dev_settings(port: int, sandbox_port: int, source_port: int) -> Settings:
    """The settings, with the ports' URLs and console logs where nothing says otherwise (an
    environment variable or .env entry always wins); the children get the same values."""
    settings = load_settings_or_exit()
    defaults = {
        "PUBLIC_URL": f"{LOCAL}:{port}",
        "CLOSE_SANDBOX_URL": f"{LOCAL}:{sandbox_port}",
        "SOURCE_URL": f"{LOCAL}:{source_port}",
        "LOG_FORMAT": "console",
    }
    unset = {k: v for k, v in defaults.items() if k not in settings.model_fields_set}
    source_url = defaults["SOURCE_URL"]
    if unset.get("SOURCE_URL", settings.SOURCE_URL) == source_url:
        unset.update(_demo_integrator_settings(settings, source_url))
    if not unset:
        return settings
    os.environ.update(unset)
    return load_settings_or_exit(**unset)


def _demo_integrator_settings(settings: Settings, source_url: str) -> dict[str, str]:
    """The demo source also plays the integrator: its settings page opens the connect widget
    (so its origin must be allowed) and its receiver gets the events (signed with a secret
    made for this run), unless the environment already says where events go."""
    values: dict[str, str] = {}
    origins = list(settings.RETURN_URL_ALLOWED_ORIGINS)
    if source_url not in origins:
        values["RETURN_URL_ALLOWED_ORIGINS"] = ",".join([*origins, source_url])
    if "INTEGRATOR_WEBHOOK_URL" not in settings.model_fields_set:
        values["INTEGRATOR_WEBHOOK_URL"] = f"{source_url}{DEMO_EVENTS_PATH}"
        values["INTEGRATOR_WEBHOOK_SECRET"] = secrets.token_urlsafe(32)
    return values


@contextlib.contextmanager
def _single_instance(pid_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on instance/dev.pid while running; the OS frees it on any exit."""
    pid_path.parent.mkdir(parents=True, exist_ok=True)
    handle = pid_path.open("a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            pid = handle.read().strip() or "?"
            raise DevError(
                f"another linksync dev is running (pid {pid}, lock {pid_path}); use that one, "
                f"or stop it (Ctrl-C in its terminal, or kill {pid}) first"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()


def _check_ports_free(ports: list[tuple[str, int, str]]) -> None:
    for name, port, option in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                raise DevError(
                    f"port {port} ({name}) is already in use by another program; stop it or "
                    f"pick another port with {option}"
                ) from None


def _child_env(settings: Settings) -> dict[str, str]:
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
    return env


def _operator(settings: Settings, env: dict[str, str]) -> Operator | None:
    """The console's login: the configured one, else a generated dev password kept in
    instance/ (with its hash, so a restart keeps the console's sessions valid)."""
    if settings.OPERATOR_USERNAME or settings.OPERATOR_PASSWORD_HASH:
        if settings.OPERATOR_USERNAME and settings.OPERATOR_PASSWORD_HASH:
            return Operator(settings.OPERATOR_USERNAME, None)
        return None  # half-configured: the console stays off, as it would in production
    password_path = settings.INSTANCE_PATH / "dev-operator-password"
    hash_path = settings.INSTANCE_PATH / "dev-operator-password-hash"
    if not password_path.exists():
        _write_private(password_path, secrets.token_urlsafe(12))
    password = password_path.read_text().strip()
    hashed = hash_path.read_text().strip() if hash_path.exists() else ""
    if not verify_password(hashed, password):
        hashed = hash_password(password)
        _write_private(hash_path, hashed)
    env.update(OPERATOR_USERNAME=DEV_OPERATOR, OPERATOR_PASSWORD_HASH=hashed)
    return Operator(DEV_OPERATOR, password, password_path)


def _write_private(path: Path, value: str) -> None:
    path.write_text(value)
    path.chmod(0o600)


def _run_children(
    settings: Settings,
    env: dict[str, str],
    operator: Operator | None,
    *,
    port: int,
    account: str,
    sandbox: bool,
    source: bool,
) -> None:
    instance = settings.INSTANCE_PATH
    logs = instance / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    children: list[Child] = []
    log_files: list[IO[bytes]] = []

    def _stop(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    # Ctrl-C (SIGINT) and SIGTERM both stop everything cleanly.
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)

    def spawn(name: str, *args: str) -> Child:
        log_path = logs / f"{name}.log"
        log_file = log_path.open("wb")
        log_files.append(log_file)
        proc = subprocess.Popen(  # noqa: S603
            [sys.executable, *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us only; we stop the children in order
        )
        child = Child(name, proc, log_path)
        children.append(child)
        return child

    sandbox_state = instance / "sandbox-state.json"
    demo_data = instance / "demo-source.json"
    try:
        if sandbox:
            sandbox_port = settings.CLOSE_SANDBOX_URL.rsplit(":", 1)[1]
            child = spawn(
                "sandbox",
                *("-m", "service.cli", "sandbox", "--port", sandbox_port),
                *("--state-path", str(sandbox_state)),
            )
            _wait_http(child, f"{settings.CLOSE_SANDBOX_URL}/_sandbox/calls")
        if source:
            source_port = settings.SOURCE_URL.rsplit(":", 1)[1]
            child = spawn(
                "demo-source",
                *("-m", "service.cli", "demo-source", "--port", source_port),
                *("--data", str(demo_data)),
                *("--linksync-url", settings.PUBLIC_URL, "--account", account),
            )
            _wait_http(child, f"{settings.SOURCE_URL}/_demo/stats")
        celery = ["-m", "celery", "-A", "workers.main"]
        worker = spawn(
            "worker", *celery, "worker", "--loglevel=INFO", "--concurrency=2", *WORKER_FLAGS
        )
        beat = spawn(
            "beat",
            *celery,
            "beat",
            "--loglevel=INFO",
            *("--schedule", str(instance / "beat-schedule")),
        )
        web = spawn(
            "web",
            *("-m", "flask", "--app", "service.wsgi:app", "run", "--port", str(port)),
            "--no-reload",
        )
        _wait_http(web, f"{LOCAL}:{port}/healthz")
        _wait_log(worker, " ready.")
        _wait_log(beat, "beat: Starting")
        connect_url = _connect_link(settings.PUBLIC_URL, settings.API_KEYS[0], account)
        click.echo(
            _summary(
                settings,
                port=port,
                account=account,
                connect_url=connect_url,
                operator=operator,
                sandbox_state=sandbox_state if sandbox else None,
                demo_data=demo_data if source else None,
                settings_page=f"{settings.SOURCE_URL}{DEMO_SETTINGS_PATH}" if source else None,
                logs=[child.log_path for child in children],
            )
        )
        while True:
            for child in children:
                if child.proc.poll() is not None:
                    raise DevError(_exited(child) + "; stopping everything")
            time.sleep(0.5)
    except KeyboardInterrupt:
        click.echo("\nstopping...")
    finally:
        _stop_all(children)
        for log_file in log_files:
            log_file.close()
    click.echo("stopped")


def _stop_all(children: list[Child]) -> None:
    # The web first (no new work), the sandbox and the source last (the worker may be using them).
    for child in reversed(children):
        if child.proc.poll() is None:
            child.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    for child in children:
        try:
            child.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.proc.kill()
            child.proc.wait(5)


def _exited(child: Child) -> str:
    return f"the {child.name} exited with code {child.proc.returncode} (see {child.log_path})"


def _wait_http(child: Child, url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise DevError(_exited(child))
        try:
            if requests.get(url, timeout=1).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise DevError(
        f"the {child.name} did not answer {url} within {timeout:.0f}s (see {child.log_path})"
    )


def _wait_log(child: Child, marker: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise DevError(_exited(child))
        if marker in child.log_path.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise DevError(f"the {child.name} did not start within {timeout:.0f}s (see {child.log_path})")


def _connect_link(public_url: str, api_key: str, account: str) -> str:
    response = requests.post(
        f"{public_url}/api/v1/connect-sessions",
        json={"account_id": account},
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=10,
    )
    if not response.ok:
        raise DevError(f"could not make a connect link: {response.status_code} {response.text}")
    return str(response.json()["connect_url"])


def _summary(
    s: Settings,
    *,
    port: int,
    account: str,
    connect_url: str,
    operator: Operator | None,
    sandbox_state: Path | None,
    demo_data: Path | None,
    settings_page: str | None,
    logs: list[Path],
) -> str:
    web = f"{LOCAL}:{port}"
    if operator is None:
        console = "off (set OPERATOR_USERNAME and OPERATOR_PASSWORD_HASH)"
    elif operator.password is None:
        console = f"{web}/admin   user {operator.username} (your OPERATOR_* settings)"
    else:
        console = (
            f"{web}/admin   user {operator.username}, password {operator.password}"
            f"   (kept in {operator.kept_in})"
        )
    close = s.CLOSE_SANDBOX_URL if s.uses_close_sandbox else "your Close app (CLOSE_CLIENT_ID)"
    if sandbox_state is not None:
        close += f"   (remembers grants, tokens and links across restarts: {sandbox_state})"
    source = s.SOURCE_URL + (f"   (data file: {demo_data})" if demo_data else "")
    log_dir = logs[0].parent if logs else s.INSTANCE_PATH / "logs"
    names = ", ".join(path.stem for path in logs)
    ttl_minutes = s.CONNECT_SESSION_TTL_SECONDS // 60
    lines = [
        "",
        "LinkSync for Close is running (embedded defaults)",
        f"  web app          {web}   (health: /healthz, ready: /readyz)",
        f"  operator console {console}",
        f"  Close            {close}",
        f"  source           {source}",
        f"  API docs         {web}/api/v1/openapi.json",
        f"  API key          in {s.INSTANCE_PATH}/dev-api-keys (or API_KEYS)",
        f"  logs             {log_dir}/<name>.log ({names})",
        "",
        *(
            [
                "  Try it as the integrator's customer: open the demo settings page and click",
                "  Connect to Close (events from LinkSync are listed there too):",
                f"    {settings_page}",
                "",
            ]
            if settings_page
            else []
        ),
        "  After editing the data file, push the change at once with:",
        f"    .venv/bin/linksync webhook {account}",
        "",
        f"  Connect the demo account '{account}' (the link is valid for {ttl_minutes} min):",
        f"    {connect_url}",
        "  A fresh connect link (or, once connected, a status-page link) at any time:",
        f"    .venv/bin/linksync connect-link {account}   (add --manage for the status page)",
        "",
        "  Ctrl-C stops everything.",
    ]
    return "\n".join(lines)
