"""The team table on the admin's status page and on the operator console's connection page
(issue #10), through HTTP against the real sandbox and source: rows from queries.coverage(),
totals, the shared-links sentence, and a member's personal connect link ("Get link")."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import func, select

from service.infra.models import Connection, ConnectSession
from service.services import Services
from service.sync.runner import run_sync
from tests.connections.test_connect_flow import Browser
from tests.helpers import connect_directly
from tests.sync.test_teams import MEMBERS, managed, personal
from tests.web.test_admin import enable_console, login, new_client


@pytest.fixture
def browser(services: Services) -> Browser:
    return Browser(services)


def admin_with_team(
    services: Services, sandbox: Any, source: Any, browser: Browser, *, permission: bool = True
) -> tuple[str, int]:
    """The admin (Jane) connects through the real flow, so the browser holds the status view;
    the source has a team of five; the admin's first run has matched it against Close."""
    account, token = browser.new_connect()
    source.store.put_all(
        account,
        [
            personal("acct1", None, account),
            personal("bob1", "m_bob", account),
            managed("disc", "Discovery call", account, [m["id"] for m in MEMBERS]),
        ],
    )
    source.store.put_members(account, MEMBERS)
    if not permission:
        sandbox.state.set_permissions("user_jane", "orga_acme", [])
    callback = browser.consent(browser.start(token))
    assert browser.client.get(callback).status_code == 303
    with services.db.session() as session:
        admin = session.scalar(
            select(Connection.id).where(
                Connection.account_id == account, Connection.member_id.is_(None)
            )
        )
    assert admin is not None
    run_sync(services, admin, trigger="connect")
    return account, admin


def row(page: str, member: str) -> str:
    match = re.search(rf'<tr data-member="{member}".*?</tr>', page, re.S)
    assert match, page
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", match.group(0)))


def connect_sessions(services: Services, account: str) -> int:
    with services.db.session() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(ConnectSession)
                .where(ConnectSession.account_id == account, ConnectSession.member_id.is_not(None))
            )
            or 0
        )


def test_status_page_lists_the_team_with_coverage(
    services: Services, sandbox: Any, source: Any, browser: Browser
) -> None:
    admin_with_team(services, sandbox, source, browser)
    page = browser.client.get("/status").get_data(as_text=True)
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))
    # Jane (the admin) and Bob, Carol, Dave mapped to their assignment urls; Zoe not in the org.
    assert "Covered 4 of 5 members" in text
    assert "1 connected, 3 through shared links only, 1 not in the Close organization" in text
    assert "You (admin)" in row(page, "m_jane") and "covered" in row(page, "m_jane")
    bob = row(page, "m_bob")
    assert "Bob Brown" in bob and "bob@acme.com" in bob and "Not connected" in bob
    assert "Discovery call → booking url" in bob and "Get link" in bob
    zoe = row(page, "m_zoe")
    assert "not in your Close org" in zoe and "not covered" in zoe and "Get link" not in zoe
    assert "shared-links-unavailable" not in page
    assert 'src="/static/team.js"' in page and "<script>" not in page  # CSP: no inline script

    status = browser.client.get("/status.json").json
    assert status["team"]["totals"] == {
        "covered": 4,
        "connected": 1,
        "mapped_only": 3,
        "unmatched": 1,
        "total": 5,
    }
    by_member = {m["member_id"]: m for m in status["team"]["members"]}
    assert by_member["m_bob"] == {
        "member_id": "m_bob",
        "covered": True,
        "reason": None,
        "connection": None,
        "via": None,
        "links": 0,
        "mappings": 1,
    }


def test_get_link_gives_a_real_personal_connect_link_and_reuses_it(
    services: Services, sandbox: Any, source: Any, browser: Browser
) -> None:
    account, _admin = admin_with_team(services, sandbox, source, browser)
    csrf = browser.csrf("/status")
    answer = browser.client.post(
        "/status/members/m_bob/connect-link",
        data={"csrf_token": csrf},
        headers={"Accept": "application/json"},
    )
    assert answer.status_code == 200, answer.get_data(as_text=True)
    url = answer.json["url"]
    assert url.startswith("http://127.0.0.1:5000/connect/") and answer.json["member_id"] == "m_bob"
    # A second click (or another page load) mints no new row: the same link comes back.
    again = browser.client.post(
        "/status/members/m_bob/connect-link",
        data={"csrf_token": csrf},
        headers={"Accept": "application/json"},
    )
    assert again.json["url"] == url and connect_sessions(services, account) == 1
    browser.client.get("/status")
    assert connect_sessions(services, account) == 1

    # The link is Bob's: his connect page, and consenting as Bob makes his connection.
    path = url.removeprefix("http://127.0.0.1:5000")
    member_page = Browser(services)
    invite = member_page.client.get(path).get_data(as_text=True)
    assert "Bob Brown" in invite and "Acme Inc." in invite
    token = path.rsplit("/", 1)[1]
    callback = member_page.consent(member_page.start(token), user="user_bob")
    assert member_page.client.get(callback).status_code == 303
    page = browser.client.get("/status").get_data(as_text=True)
    assert "Connected" in row(page, "m_bob")

    # Without JavaScript the form posts and the page shows the link in Carol's row.
    plain = browser.client.post(
        "/status/members/m_carol/connect-link", data={"csrf_token": browser.csrf("/status")}
    )
    assert plain.status_code == 303
    page = browser.client.get("/status").get_data(as_text=True)
    carol = re.search(r'<tr data-member="m_carol".*?</tr>', page, re.S)
    assert carol and re.search(
        r'class="link-url" value="http://127\.0\.0\.1:5000/connect/', carol[0]
    )


def test_get_link_refuses_bad_requests_with_4xx(
    services: Services, sandbox: Any, source: Any, browser: Browser
) -> None:
    admin_with_team(services, sandbox, source, browser)
    csrf = browser.csrf("/status")
    unknown = browser.client.post(
        "/status/members/m_nobody/connect-link",
        data={"csrf_token": csrf},
        headers={"Accept": "application/json"},
    )
    assert unknown.status_code == 404
    assert "'m_nobody' is not a member" in unknown.json["error"]["message"]
    no_csrf = browser.client.post(
        "/status/members/m_bob/connect-link", headers={"Accept": "application/json"}
    )
    assert no_csrf.status_code == 400
    stranger = Browser(services)  # no manage session
    assert stranger.client.post("/status/members/m_bob/connect-link").status_code in (400, 401)


def test_without_manage_customizations_the_page_says_so(
    services: Services, sandbox: Any, source: Any, browser: Browser
) -> None:
    admin_with_team(services, sandbox, source, browser, permission=False)
    page = browser.client.get("/status").get_data(as_text=True)
    sentence = re.search(r'id="shared-links-unavailable">([^<]+)<', page)
    assert sentence and "lacks the Manage Customizations permission in Acme Inc." in sentence[1]
    assert "Covered 1 of 5 members" in re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


def test_no_team_no_table_and_a_members_own_page_has_none(
    services: Services, sandbox: Any, source: Any, browser: Browser
) -> None:
    account, token = browser.new_connect()
    source.store.put_all(account, [personal("a", None, account)])
    callback = browser.consent(browser.start(token))
    browser.client.get(callback)
    page = browser.client.get("/status").get_data(as_text=True)
    assert 'id="team"' not in page and "team.js" not in page
    assert browser.client.get("/status.json").json["team"] is None


def test_console_connection_page_shows_the_team_table(
    services: Services, sandbox: Any, source: Any, browser: Browser
) -> None:
    account, admin = admin_with_team(services, sandbox, source, browser)
    bob = connect_directly(services, sandbox, account, user_id="user_bob", member_id="m_bob")
    enable_console(services.settings)
    console = new_client(services)
    login(console)
    page = console.get(f"/admin/connections/{admin}").get_data(as_text=True)
    assert 'id="connection-team"' in page
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))
    assert "Covered 4 of 5 members" in text
    assert "Connected" in row(page, "m_bob") and "Get link" not in page
    # A member connection's page has no team table.
    member_page = console.get(f"/admin/connections/{bob}").get_data(as_text=True)
    assert 'id="connection-team"' not in member_page
