"""The team in real Chromium (issue #10): the admin connects and sees the team table, gets a
member's personal link and copies it; the member opens it in a browser of their own, picks
their Close user on the sandbox's consent screen, and the admin's open page turns their row
connected (its script follows status.json), then mapped to their own link."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from service.connections.sessions import create_connect_session
from service.infra.models import Connection
from service.sync.runner import run_sync
from tests.conftest import new_account
from tests.e2e.conftest import LiveApp
from tests.sync.test_teams import MEMBERS, managed, personal

pytestmark = pytest.mark.browser


def connection_id(app: LiveApp, account: str, member: str | None = None) -> int:
    with app.svc.db.session() as session:
        cid = session.scalar(
            select(Connection.id).where(
                Connection.account_id == account,
                Connection.member_id == member if member else Connection.member_id.is_(None),
            )
        )
    assert cid is not None
    return cid


def test_team_table_personal_link_and_a_member_connecting(
    live_app: Callable[..., LiveApp],
    page: Any,
    chromium: Any,
    sandbox: Any,
    source: Any,
    artifacts: Path,
) -> None:
    app = live_app()
    account = new_account()
    source.store.put_all(
        account,
        [
            personal("acct1", None, account),
            personal("bob1", "m_bob", account),
            managed("disc", "Discovery call", account, [m["id"] for m in MEMBERS]),
        ],
    )
    source.store.put_members(account, MEMBERS)
    with app.svc.db.session() as session:
        _, _, url = create_connect_session(session, app.svc.settings, account)

    # The admin connects as Jane; the first sync (here in the foreground) matches the team.
    page.goto(url)
    page.click("#connect")
    page.select_option("select[name=user_id]", "user_jane")
    page.check("input[name=organization_id][value=orga_acme]")
    page.click("button[value=approve]")
    page.wait_for_selector("#status-badge")
    admin = connection_id(app, account)
    run_sync(app.svc, admin, trigger="connect")
    page.reload()
    page.wait_for_selector("#team")
    assert " ".join(page.inner_text("#team-totals").split()).startswith("Covered 4 of 5 members")
    bob_row = 'tr[data-member="m_bob"]'
    assert "Not connected" in page.inner_text(bob_row)
    assert "not in your Close org" in page.inner_text('tr[data-member="m_zoe"]')
    page.screenshot(path=str(artifacts / "team-table.png"), full_page=True)

    # Get Bob's personal link (a POST with the page's CSRF token) and copy it.
    page.click(f"{bob_row} [data-get-link]")
    page.wait_for_selector(f"{bob_row} .link-box:not([hidden])")
    link = page.input_value(f"{bob_row} .link-url")
    assert link.startswith(f"{app.url}/connect/")
    page.click(f"{bob_row} [data-copy]")
    page.wait_for_selector(f"{bob_row} [data-copy]:has-text('Copied')")

    # Bob opens it in a browser of his own and consents as himself.
    other = chromium.new_context(viewport={"width": 1100, "height": 900})
    try:
        bob = other.new_page()
        bob.goto(link)
        assert "Bob Brown" in bob.inner_text("main")
        bob.click("#connect")
        bob.select_option("select[name=user_id]", "user_bob")
        bob.check("input[name=organization_id][value=orga_acme]")
        bob.click("button[value=approve]")
        bob.wait_for_selector("#status-badge")
        assert "Bob" in bob.inner_text("main") and 'id="team"' not in bob.content()
    finally:
        other.close()

    # The admin's open page follows status.json: Bob's row turns connected, no reload.
    page.wait_for_selector(f'{bob_row}[data-connection="active"]', timeout=10_000)
    assert "Connected" in page.inner_text(f'{bob_row} [data-field="connection"]')
    # Bob's first run creates his links and asks for the admin's run, which maps him to his
    # own link (the worker's part, run here in the foreground).
    bob_id = connection_id(app, account, "m_bob")
    run_sync(app.svc, bob_id, trigger="connect")
    enqueued = app.svc.enqueue.calls  # type: ignore[union-attr]
    assert (admin, "team", None) in enqueued
    run_sync(app.svc, admin, trigger="team")
    page.reload()
    page.wait_for_selector("#team")
    assert "Discovery call → their link" in page.inner_text(bob_row)
    assert page.inner_text(f'{bob_row} [data-field="links"]') == "2"
    page.screenshot(path=str(artifacts / "team-table-member-connected.png"), full_page=True)
