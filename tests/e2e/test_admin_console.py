"""The operator console in real headless Chromium: sign in, find a connection, resync it and
watch the run finish; and the dashboard while a fleet sync is running (screenshots saved)."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from service.infra.db import utcnow
from service.infra.models import Connection, ConnectionStatus
from service.sync.runner import run_sync
from service.web.admin.auth import hash_password
from tests.conftest import new_account
from tests.e2e.conftest import LiveApp
from tests.helpers import connect_directly, event_type

pytestmark = pytest.mark.browser
PASSWORD = "operator password 1"


def start_console(live_app: Callable[..., LiveApp]) -> LiveApp:
    return live_app(OPERATOR_USERNAME="ops", OPERATOR_PASSWORD_HASH=hash_password(PASSWORD))


def sign_in(page: Any, app: LiveApp) -> None:
    page.goto(f"{app.url}/admin/")
    assert "/admin/login" in page.url  # sent to the sign-in first
    page.fill("#username", "ops")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("h1:has-text('Fleet')")


def add_other_connections(app: LiveApp) -> None:
    """A few more connections, so the list looks like a fleet."""
    people = [
        ("Tom Baker", "tom@globex.com", "Globex Corp.", ConnectionStatus.ACTIVE),
        ("Rita Moreno", "rita@initech.io", "Initech", ConnectionStatus.NEEDS_REAUTH),
        ("Sam Lee", "sam@umbrella.co", "Umbrella Health", ConnectionStatus.ACTIVE),
        ("Ana Ruiz", "ana@hooli.com", "Hooli", ConnectionStatus.DISCONNECTED),
    ]
    with app.svc.db.session() as session:
        for name, email, org, status in people:
            session.add(
                Connection(
                    account_id=new_account(),
                    status=status,
                    close_user_name=name,
                    close_user_email=email,
                    close_org_name=org,
                    close_org_id="orga_" + org.split()[0].lower(),
                    connected_at=utcnow(),
                    status_reason="refresh token revoked in Close"
                    if status == ConnectionStatus.NEEDS_REAUTH
                    else None,
                )
            )


def test_operator_finds_a_connection_resyncs_it_and_sees_the_run(
    live_app: Callable[..., LiveApp], page: Any, sandbox: Any, source: Any, artifacts: Path
) -> None:
    app = start_console(live_app)
    account = new_account()
    items = [event_type(n, account) for n in range(1, 9)]
    items.append(event_type(9, account, name="Legacy demo", url="ftp://files.example.com/x"))
    source.store.put_all(account, items)
    cid = connect_directly(app.svc, sandbox, account)
    run_sync(app.svc, cid, trigger="connect")
    add_other_connections(app)

    sign_in(page, app)
    page.click("nav >> text=Connections")
    page.wait_for_selector("#connections")
    assert account in page.inner_text("#connections")
    page.screenshot(path=str(artifacts / "admin-connections.png"), full_page=True)
    page.fill("input[name=q]", "JANE@ACME")
    page.click("button:has-text('Filter')")
    page.wait_for_selector(f"#connections >> text={account}")
    assert page.locator("#connections tbody tr").count() == 1

    page.click(f"text={account}")
    page.wait_for_selector("#runs")
    assert "connect" in page.inner_text("#runs") and "partial" in page.inner_text("#runs")
    first_link = page.inner_text("#links tbody tr:first-child")
    assert "evt_9" in first_link and "error" in first_link  # errors first

    page.click("#resync")
    page.wait_for_selector("text=Resync queued as run #")
    first_run = page.inner_text("#runs tbody tr:first-child")
    assert "manual" in first_run and "queued" in first_run
    page.screenshot(path=str(artifacts / "admin-console.png"), full_page=True)

    # A worker picks the run up: the page follows it and shows the result by itself.
    [(enqueued_cid, trigger, run_id)] = app.svc.enqueue.calls  # type: ignore[union-attr]
    assert (enqueued_cid, trigger) == (cid, "manual")
    run_sync(app.svc, cid, trigger=trigger, run_id=run_id)
    page.wait_for_selector(
        f"#runs tbody tr:first-child:has-text('#{run_id}') .badge-partial", timeout=15000
    )


def test_dashboard_shows_a_fleet_sync_as_it_happens(
    live_app: Callable[..., LiveApp], page: Any, sandbox: Any, source: Any, artifacts: Path
) -> None:
    app = start_console(live_app)
    add_other_connections(app)
    accounts = [new_account() for _ in range(2)]
    ids = []
    for account, count in zip(accounts, (240, 160), strict=True):
        source.store.put_all(account, [event_type(n, account) for n in range(1, count + 1)])
        ids.append(connect_directly(app.svc, sandbox, account))
    sign_in(page, app)
    assert "No sync is running." in page.inner_text("#running-runs")

    sandbox.state.set_faults(latency_ms=30)
    syncs = [
        threading.Thread(target=run_sync, args=(app.svc, cid), kwargs={"trigger": "manual"})
        for cid in ids
    ]
    try:
        for sync in syncs:
            sync.start()
        # No reload: the dashboard refreshes itself every 2 s. Wait until it shows a run that
        # is running and has made progress.
        page.wait_for_function(
            """() => Array.from(document.querySelectorAll('#running-runs progress'))
                   .some(bar => bar.value > 0 && bar.value < bar.max)""",
            timeout=20000,
        )
        running = page.inner_text("#running-runs")
        assert "running" in running and any(a in running for a in accounts)
        progress = re.findall(r"(\d+) / (\d+)", running)
        assert any(0 < int(done) < int(total) for done, total in progress), running
        assert "Live · updated" in page.inner_text("#live")
        page.screenshot(path=str(artifacts / "admin-console-during-sync.png"), full_page=True)
    finally:
        for sync in syncs:
            sync.join(120)
        sandbox.state.set_faults()

    # When the syncs are over, the dashboard says so and counts the links, still without reload.
    page.wait_for_selector("#running-runs >> text=No sync is running.", timeout=10000)
    page.wait_for_function(
        "() => document.querySelector('[data-stat=\"links.synced\"]').textContent === '400'",
        timeout=10000,
    )
