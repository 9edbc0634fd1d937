"""The org admin's whole path in real Chromium: connect, approve on the sandbox's consent
screen, see the status view; decline once; disconnect."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from service.connections.sessions import create_connect_session
from service.sync.runner import run_sync
from tests.conftest import new_account
from tests.e2e.conftest import LiveApp
from tests.helpers import event_type

pytestmark = pytest.mark.browser


def connect_url(app: LiveApp, account: str) -> str:
    with app.svc.db.session() as session:
        _, _, url = create_connect_session(session, app.svc.settings, account)
    return url


def test_connect_decline_and_disconnect_in_chromium(
    live_app: Callable[..., LiveApp], page: Any, sandbox: Any, source: Any, artifacts: Path
) -> None:
    app = live_app()
    account = new_account()
    source.store.put_all(account, [event_type(n, account) for n in range(1, 5)])
    url = connect_url(app, account)

    # Decline once: a friendly page that offers to try again.
    page.goto(url)
    page.click("#connect")
    page.wait_for_selector("text=Authorize")
    page.click("button[value=decline]")
    page.wait_for_selector("text=Not connected")
    assert "declined" in page.content()
    page.click("a.button:has-text('Try again')")
    page.wait_for_selector("#connect")

    # Connect: pick an organization and approve.
    started = time.monotonic()
    page.click("#connect")
    page.select_option("select[name=user_id]", "user_jane")
    page.check("input[name=organization_id][value=orga_acme]")
    page.click("button[value=approve]")
    page.wait_for_selector("#status-badge")
    round_trip = time.monotonic() - started
    print(f"\nconnect round trip (click Connect -> status view): {round_trip * 1000:.0f} ms")
    text = page.inner_text("main")
    assert (
        "Connected" in text
        and "Jane Doe" in text
        and "jane@acme.com" in text
        and "Acme Inc." in text
    )

    # The first sync (run here in the foreground instead of a worker) shows up on the page.
    with app.svc.db.session() as session:
        from sqlalchemy import select

        from service.infra.models import Connection

        cid = session.scalar(select(Connection.id).where(Connection.account_id == account))
    assert cid is not None
    run_sync(app.svc, cid, trigger="connect")
    page.reload()
    assert page.inner_text("#count-synced") == "4"
    page.screenshot(path=str(artifacts / "status-view.png"), full_page=True)

    # Disconnect asks first; "remove": links leave Close, the page offers Connect again.
    page.click("#disconnect")
    page.wait_for_selector("#confirm-disconnect")
    page.check("#links-remove")
    page.click("#confirm-disconnect")
    page.wait_for_selector("#connect")
    assert "Disconnected" in page.inner_text("main")
    assert [
        link for link in sandbox.state.links(user_id="user_jane") if link["source"] == "THIRD_PARTY"
    ] == []


def test_expired_link_is_a_friendly_page(live_app: Callable[..., LiveApp], page: Any) -> None:
    app = live_app()
    response = page.goto(f"{app.url}/connect/not-a-real-token")
    assert response.status == 404
    assert "This link is not valid" in page.inner_text("h1")
    assert "(404)" in page.inner_text("h1") and "not_found" not in page.inner_text("main")


def test_reload_callback_expired_link_second_browser_and_leave_links(
    live_app: Callable[..., LiveApp],
    page: Any,
    chromium: Any,
    sandbox: Any,
    source: Any,
    artifacts: Path,
) -> None:
    ttl = 5
    app = live_app(CONNECT_SESSION_TTL_SECONDS=ttl)
    account = new_account()
    source.store.put_all(account, [event_type(n, account) for n in range(1, 4)])
    url = connect_url(app, account)
    made = time.monotonic()
    callbacks: list[str] = []
    page.on(
        "request",
        lambda request: (
            callbacks.append(request.url) if "/oauth/close/callback" in request.url else None
        ),
    )

    page.goto(url)
    page.click("#connect")
    page.select_option("select[name=user_id]", "user_jane")
    page.check("input[name=organization_id][value=orga_acme]")
    page.click("button[value=approve]")
    page.wait_for_selector("#status-badge")
    main = page.inner_text("main")
    assert "Acme Inc." in main and "Acme Inc.." not in main
    # The first run is queued (no worker here) and has no total yet.
    assert "Reading your event types" in page.inner_text("#progress") and "0 / 0" not in main
    page.screenshot(path=str(artifacts / "status-reading-event-types.png"), full_page=True)

    # Reloading the callback after success: back to the status view, not an error.
    assert callbacks
    response = page.goto(callbacks[0])
    assert response.status == 200 and page.url.endswith("/status")
    assert "Jane Doe" in page.inner_text("main")
    page.screenshot(path=str(artifacts / "callback-reloaded.png"), full_page=True)

    # The connect link expires; this browser still gets its status view from it.
    time.sleep(max(0.0, ttl + 0.5 - (time.monotonic() - made)))
    page.goto(url)
    page.wait_for_selector("#status-badge")
    assert page.url.endswith("/status") and "Jane Doe" in page.inner_text("main")
    page.screenshot(path=str(artifacts / "expired-link-same-browser.png"), full_page=True)

    # Another browser with only the URL: refused, and nothing about the Close user.
    other = chromium.new_context(viewport={"width": 1100, "height": 900})
    try:
        stranger = other.new_page()
        answer = stranger.goto(url)
        assert answer.status == 410
        text = stranger.inner_text("main")
        assert "already used" in text and "settings page" in text and "Jane" not in text
        stranger.screenshot(path=str(artifacts / "used-link-other-browser.png"), full_page=True)
        assert stranger.goto(f"{app.url}/status").status == 401
    finally:
        other.close()

    # Disconnect, leaving the links in Close.
    with app.svc.db.session() as session:
        from sqlalchemy import select

        from service.infra.models import Connection

        cid = session.scalar(select(Connection.id).where(Connection.account_id == account))
    assert cid is not None
    run_sync(app.svc, cid, trigger="connect")
    page.reload()
    assert page.inner_text("#count-synced") == "3"
    page.click("#disconnect")
    page.wait_for_selector("#confirm-disconnect")
    assert "Leave them in Close" in page.inner_text("main")
    page.check("#links-keep")
    page.screenshot(path=str(artifacts / "disconnect-confirm.png"), full_page=True)
    page.click("#confirm-disconnect")
    page.wait_for_selector("#connect")
    assert "left in Close" in page.inner_text("main")
    page.screenshot(path=str(artifacts / "disconnected-links-kept.png"), full_page=True)
    kept = [
        link for link in sandbox.state.links(user_id="user_jane") if link["source"] == "THIRD_PARTY"
    ]
    assert len(kept) == 3
