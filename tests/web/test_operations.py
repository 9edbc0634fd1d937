"""Operability: readiness, metrics, structured logs with context and without secrets, doctor."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from service.app import create_app
from service.infra import migrate
from service.infra.logs import configure_logging
from service.services import Services
from service.settings import Settings
from service.sync.runner import run_sync
from tests.conftest import ROOT, RecordingEnqueue, new_account, settings_env
from tests.helpers import connect_directly, event_type, worker_alive


def app_for(settings: Settings) -> Any:
    migrate.upgrade(settings.database_url)
    return create_app(settings, services=Services(settings, enqueue=RecordingEnqueue()))


def test_readyz_reports_an_unreachable_broker(make_settings: Callable[..., Settings]) -> None:
    healthy = app_for(make_settings()).test_client().get("/readyz")
    assert healthy.status_code == 200 and healthy.json["status"] == "ready"
    broken = app_for(make_settings(REDIS_URL="redis://127.0.0.1:9/0")).test_client().get("/readyz")
    assert broken.status_code == 503
    assert (
        broken.json["checks"]["broker"].startswith("unreachable")
        and "broker" in broken.json["reason"]
    )


def test_metrics_count_runs_calls_and_connections(
    services: Services, sandbox: Any, source: Any
) -> None:
    account = new_account()
    source.store.put_all(account, [event_type(n, account) for n in range(1, 4)])
    cid = connect_directly(services, sandbox, account)
    run_sync(services, cid, trigger="manual")
    body = (
        create_app(services.settings, services=services)
        .test_client()
        .get("/metrics")
        .get_data(as_text=True)
    )
    assert 'linksync_sync_runs_total{outcome="succeeded",trigger="manual"}' in body
    assert 'linksync_close_calls_total{group="scheduling_link_integration",status="200"}' in body
    assert 'linksync_connections{status="active"}' in body
    assert 'linksync_links{state="synced"}' in body
    assert "linksync_sync_duration_seconds_bucket" in body


def test_logs_are_json_with_context_and_no_secrets(
    services: Services, sandbox: Any, source: Any
) -> None:
    stream = io.StringIO()
    configure_logging("DEBUG", "json")
    logging.getLogger().handlers[0].stream = stream  # type: ignore[attr-defined]
    try:
        account = new_account()
        source.store.put_all(account, [event_type(1, account, url="/bad"), event_type(2, account)])
        cid = connect_directly(services, sandbox, account)
        sandbox.state.expire_access_tokens()
        app = create_app(services.settings, services=services)
        from service.infra.logs import bind

        bind(connection_id=cid, account_id=account, task_id="t-1")
        run_sync(services, cid, trigger="manual")
        sandbox.state.revoke_grant("user_jane")
        source.store.update(account, "evt_2", name="changed after the grant was revoked")
        from service.infra.models import Connection

        with services.db.session() as session:
            connection = session.get(Connection, cid)
            assert connection is not None
            connection.token_refresh_at = connection.token_expires_at = None
        run_sync(services, cid, trigger="manual")
        app.test_client().get("/api/v1/accounts/x/connection", headers={"X-Request-Id": "req-42"})
    finally:
        from service.infra.logs import clear

        clear()
        logging.getLogger().handlers.clear()
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    assert lines, stream.getvalue()[:500]
    revoked = [line for line in lines if "re-authorization" in line["event"]]
    assert revoked and revoked[0]["connection_id"] == cid and revoked[0]["account_id"] == account
    assert all({"timestamp", "level", "event"} <= set(line) for line in lines)
    text = stream.getvalue()
    for grant in sandbox.state.grants.values():
        assert grant.refresh_token not in text
    for token in sandbox.state.access_tokens:
        assert token not in text


def test_doctor_passes_on_a_healthy_setup_and_fails_loudly(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    migrate.upgrade(settings.database_url)
    env = settings_env(settings)
    worker_alive(settings)  # a healthy setup has a worker that reports in
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "doctor"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASS  migrations" in done.stdout and "PASS  close api" in done.stdout
    env_bad = {
        **env,
        "DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:9/none",
        "SOURCE_URL": "http://127.0.0.1:9",
    }
    failed = subprocess.run(
        [sys.executable, "-m", "service.cli", "doctor"],
        cwd=ROOT,
        env=env_bad,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert failed.returncode == 1
    assert "FAIL  database" in failed.stdout and "FAIL  source" in failed.stdout


def test_doctor_fails_on_each_production_weakness_with_the_start_up_message(
    make_settings: Callable[..., Settings],
) -> None:
    from service.settings import SettingsError, load_settings

    settings = make_settings()
    migrate.upgrade(settings.database_url)
    env = {
        **settings_env(settings),
        "LINKSYNC_ENV": "production",
        "SECRET_KEY": "Changeme-Please-7",
        "TOKEN_ENCRYPTION_KEYS": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "PUBLIC_URL": "http://linksync.example.net",
    }
    env.pop("SOURCE_URL")
    env.pop("SOURCE_TOKEN")
    try:
        load_settings(**{k: v for k, v in env.items() if k in Settings.model_fields})
    except SettingsError as exc:
        expected = exc.problems  # what start-up refuses with
    else:
        raise AssertionError("production should refuse this configuration")
    assert len(expected) >= 6
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "doctor"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    fails = [line for line in done.stdout.splitlines() if line.startswith("FAIL  settings")]
    assert [line.split(None, 2)[2] for line in fails] == expected
    for name in ("SECRET_KEY", "TOKEN_ENCRYPTION_KEYS", "CLOSE_CLIENT_ID", "SOURCE_URL"):
        assert any(name in line for line in fails), name
    assert "PUBLIC_URL must be an https:// URL" in done.stdout
    # The other checks still ran.
    assert "PASS  migrations" in done.stdout and "Changeme-Please" not in done.stdout


def test_cli_sync_runs_in_the_foreground_and_prints_counts(
    make_settings: Callable[..., Settings], sandbox: Any, source: Any
) -> None:
    settings = make_settings()
    migrate.upgrade(settings.database_url)
    svc = Services(settings, enqueue=RecordingEnqueue())
    account = new_account()
    source.store.put_all(account, [event_type(n, account) for n in range(1, 4)])
    connect_directly(svc, sandbox, account)
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "sync", account],
        cwd=ROOT,
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "succeeded in " in done.stdout
    assert "created 3, updated 0, deleted 0, unchanged 0, failed 0" in done.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "service.cli", "sync", "no-such-account"],
        cwd=ROOT,
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 1 and "no connection" in missing.stderr


def test_request_ids_keep_the_clients_own_and_are_unique_otherwise() -> None:
    from service.web.headers import RequestIds

    ids = RequestIds()
    assert ids("req-42") == "req-42"
    assert ids("x" * 100) == "x" * 64
    made = [ids(None) for _ in range(1000)] + [ids("") for _ in range(1000)]
    assert len(set(made)) == 2000
    assert all(len(value) == 16 and int(value, 16) >= 0 for value in made)


def test_a_forked_worker_draws_request_ids_of_its_own() -> None:
    """A gunicorn worker of a preloaded app is a fork: its counter starts again, so it must not
    reuse the parent's prefix."""
    import multiprocessing

    from service.web.headers import RequestIds

    ids = RequestIds()
    parent = ids(None)
    reader, writer = multiprocessing.get_context("fork").Pipe(duplex=False)
    child = multiprocessing.get_context("fork").Process(target=lambda: writer.send(ids(None)))
    child.start()
    assert reader.poll(10)
    from_child = reader.recv()
    child.join(10)
    assert from_child[:8] != parent[:8]


def test_flask_and_the_webhook_endpoint_share_one_request_id_sequence(
    make_settings: Callable[..., Settings],
) -> None:
    """Both layers answer with an X-Request-Id from the same generator (no id is made twice,
    whichever layer served the request), and echo the client's own."""
    client = app_for(make_settings()).test_client()
    first = client.get("/healthz").headers["X-Request-Id"]
    hook = client.post("/webhooks/source", json={}).headers["X-Request-Id"]
    last = client.get("/healthz").headers["X-Request-Id"]
    assert first[:8] == hook[:8] == last[:8]
    assert int(first[8:], 16) < int(hook[8:], 16) < int(last[8:], 16)
    own = client.post("/webhooks/source", json={}, headers={"X-Request-Id": "req-7"})
    assert own.headers["X-Request-Id"] == "req-7"
