"""The operator console in real Chromium, including the dashboard while a sync is running."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from service.operators import hash_password
from service.sync.runner import run_sync
from tests.conftest import new_account
from tests.e2e.conftest import LiveApp
from tests.helpers import connect_directly, event_type

pytestmark = pytest.mark.browser
PASSWORD = "operator password 1"


def test_console_shows_a_sync_as_it_happens(
    live_app: Callable[..., LiveApp], page: Any, sandbox: Any, source: Any, artifacts: Path
) -> None:
    app = live_app(OPERATOR_USERNAME="ops", OPERATOR_PASSWORD_HASH=hash_password(PASSWORD))
    account = new_account()
    source.store.put_all(account, [event_type(n, account) for n in range(1, 121)])
    cid = connect_directly(app.svc, sandbox, account)
    sandbox.state.set_faults(latency_ms=60)

    page.goto(f"{app.url}/admin/")
    page.fill("input[name=username]", "ops")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("text=Dashboard")

    sync = threading.Thread(
        target=run_sync, args=(app.svc,), kwargs={"connection_id": cid, "trigger": "manual"}
    )
    sync.start()
    # The dashboard refreshes itself every 2 s: wait for the run to show up with progress.
    page.wait_for_selector("#active-runs progress", timeout=15000)
    assert "running" in page.inner_text("#active-runs")
    page.screenshot(path=str(artifacts / "admin-console-during-sync.png"), full_page=True)
    sync.join(60)
    sandbox.state.set_faults()

    page.goto(f"{app.url}/admin/connections?q={account}")
    page.click(f"text={account}")
    page.wait_for_selector("#runs")
    assert "succeeded" in page.inner_text("#runs")
    page.click("#resync")
    page.wait_for_selector("#runs")
    assert "queued" in page.inner_text("#runs")
    page.screenshot(path=str(artifacts / "admin-console.png"), full_page=True)
