"""`linksync sync` and `linksync webhook` as a user runs them: the real entry point in a
subprocess against the sandbox and the demo source; phases, the summary line, exit status."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from service.app import create_app
from service.infra import migrate
from service.infra.background_server import BackgroundServer
from service.services import Services
from service.settings import Settings
from tests.conftest import RecordingEnqueue, new_account, settings_env
from tests.helpers import connect_directly, event_type


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    settings = make_settings()
    migrate.upgrade(settings.database_url)
    return settings


@pytest.fixture
def svc(settings: Settings) -> Iterator[Services]:
    services = Services(settings, enqueue=RecordingEnqueue())
    yield services
    services.close()


def run_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        env=settings_env(settings),
        cwd=settings.INSTANCE_PATH.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def connected(svc: Services, sandbox: Any, source: Any, items: list[dict[str, Any]]) -> str:
    account = new_account()
    source.store.put_all(account, items)
    connect_directly(svc, sandbox, account)
    return account


def test_sync_shows_every_phase_and_ends_with_one_summary_line(
    svc: Services, settings: Settings, sandbox: Any, source: Any
) -> None:
    account = connected(svc, sandbox, source, [event_type(n, "a") for n in (1, 2, 3)])
    first = run_cli(settings, "sync", account, "--reconcile")
    assert first.returncode == 0, first.stderr
    assert "Reconciling: listing Close's links..." in first.stderr
    assert f"Reading the source for {account}..." in first.stderr
    assert "Applying 3 change(s) to Close" in first.stderr
    summary = first.stdout.strip().splitlines()
    assert len(summary) == 1
    assert " succeeded in " in summary[0]
    assert summary[0].endswith("created 3, updated 0, deleted 0, unchanged 0, failed 0")

    again = run_cli(settings, "sync", account)  # nothing changed: still says what it did
    assert again.returncode == 0, again.stderr
    assert f"Reading the source for {account}..." in again.stderr
    assert "Applying: nothing to change in Close" in again.stderr
    assert again.stdout.strip().endswith("created 0, updated 0, deleted 0, unchanged 3, failed 0")


def test_a_partial_sync_exits_3_and_a_failed_one_exits_1(
    svc: Services, settings: Settings, sandbox: Any, source: Any
) -> None:
    items = [event_type(1, "a"), event_type(2, "a", name="")]  # the second is invalid
    partial = run_cli(settings, "sync", connected(svc, sandbox, source, items))
    assert partial.returncode == 3, partial.stdout + partial.stderr
    assert " partial in " in partial.stdout and "invalid" in partial.stdout

    account = connected(svc, sandbox, source, [event_type(1, "a")])
    sandbox.state.revoke_grant("user_jane")
    failed = run_cli(settings, "sync", account)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert " failed" in failed.stdout

    unknown = run_cli(settings, "sync", "no-such-account")
    assert unknown.returncode == 1
    assert unknown.stderr.strip().startswith("linksync: ")
    assert len(unknown.stderr.strip().splitlines()) == 1


def test_webhook_exits_0_on_202_and_1_with_one_line_otherwise(
    svc: Services, settings: Settings, sandbox: Any, source: Any
) -> None:
    account = connected(svc, sandbox, source, [event_type(1, "a")])
    with BackgroundServer(create_app(settings, services=svc)) as web:
        url = f"{web.url}/webhooks/source"
        accepted = run_cli(settings, "webhook", account, "--url", url)
        assert accepted.returncode == 0, accepted.stderr
        assert accepted.stdout.startswith("202 ")

        refused = run_cli(settings, "webhook", "no-such-account", "--url", url)
        assert refused.returncode == 1
        assert refused.stdout == ""
        line = refused.stderr.strip()
        assert line.startswith(f"linksync: {url} refused the webhook: 404 ") and "\n" not in line

    gone = run_cli(settings, "webhook", account, "--url", url)  # the server is stopped
    assert gone.returncode == 1
    assert "unreachable" in gone.stderr
