"""Connect links are single-use; the status view belongs to the browser that connected (or that
opened a manage link), never to whoever holds a URL. Through HTTP: our app (test client) and
the real sandbox."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from service.cli import main as cli
from service.infra.db import utcnow
from service.infra.models import Connection, ConnectSession, ManageSession, RunStatus, SyncRun
from tests.api.test_hostile_input import NASTY, snapshot
from tests.conftest import API_KEY, settings_env
from tests.connections.test_connect_flow import Browser
from tests.helpers import connect_directly, event_type, our_links

AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture
def browser(services: Any) -> Browser:
    return Browser(services)


def connected(browser: Browser, **consent: str) -> tuple[str, str]:
    """Connect a fresh account in `browser`; return (account, connect token)."""
    account, token = browser.new_connect()
    response = browser.client.get(browser.consent(browser.start(token), **consent))
    assert response.status_code == 303 and response.headers["Location"].endswith("/status")
    return account, token


def connection_of(browser: Browser, account: str) -> Connection:
    with browser.svc.db.session() as session:
        connection = session.scalar(select(Connection).where(Connection.account_id == account))
        assert connection is not None
        session.expunge(connection)
        return connection


def text(response: Any) -> str:
    return str(response.get_data(as_text=True))


def test_used_connect_link_is_refused_in_another_browser_and_leaks_nothing(
    browser: Browser, sandbox: Any
) -> None:
    account, token = connected(browser)
    other = browser.app.test_client()
    page = other.get(f"/connect/{token}")
    assert page.status_code == 410
    body = text(page)
    assert "already used" in body and "settings page" in body
    assert "Jane Doe" not in body and "jane@acme.com" not in body
    # Nor can it reach the status view, Sync now or Disconnect.
    for response in (
        other.get("/status"),
        other.get("/status.json"),
        other.get("/status/disconnect"),
    ):
        assert response.status_code == 401 and "jane@acme.com" not in text(response)
    assert connection_of(browser, account).status == "active"


def test_a_sign_in_started_with_the_link_before_it_was_used_cannot_repoint_the_account(
    browser: Browser, sandbox: Any
) -> None:
    account, token = browser.new_connect()
    attacker = Browser(browser.svc)
    attacker_authorize = attacker.start(token)  # both hold the URL; the attacker starts first
    browser.client.get(browser.consent(browser.start(token)))
    callback = attacker.consent(attacker_authorize, user="user_john")
    response = attacker.client.get(callback)
    assert response.status_code == 410 and "already used" in text(response)
    connection = connection_of(browser, account)
    assert connection.close_user_id == "user_jane"


def test_active_connection_needs_a_link_made_after_it_was_connected(
    browser: Browser, sandbox: Any
) -> None:
    account, old = browser.new_connect()
    connect_directly(browser.svc, sandbox, account)  # connected after `old` was made
    stranger = Browser(browser.svc)
    response = stranger.client.get(f"/connect/{old}")
    assert response.status_code == 410 and "connected after this link was made" in text(response)
    _, fresh = browser.new_connect(account)
    page = text(stranger.client.get(f"/connect/{fresh}"))
    assert "already connected" in page and "Jane Doe" not in page and "Reconnect" in page
    csrf = stranger.csrf(f"/connect/{fresh}")
    assert (
        stranger.client.post(f"/connect/{old}/authorize", data={"csrf_token": csrf}).status_code
        == 410
    )


def test_reloading_the_callback_after_success_returns_to_the_status_view(
    browser: Browser, sandbox: Any
) -> None:
    _, token = browser.new_connect()
    callback = browser.consent(browser.start(token))
    assert browser.client.get(callback).status_code == 303
    again = browser.client.get(callback)
    assert again.status_code == 303 and again.headers["Location"].endswith("/status")
    assert "Jane Doe" in text(browser.client.get("/status"))
    # The same callback in another browser is still refused.
    assert browser.app.test_client().get(callback).status_code == 400


def test_expired_connect_link_reopened_in_the_browser_that_connected_shows_the_status(
    browser: Browser, sandbox: Any
) -> None:
    account, token = connected(browser)
    with browser.svc.db.session() as session:
        for connect in session.scalars(
            select(ConnectSession).where(ConnectSession.account_id == account)
        ):
            connect.expires_at = utcnow() - timedelta(seconds=1)
    response = browser.client.get(f"/connect/{token}")
    assert response.status_code == 303 and response.headers["Location"].endswith("/status")
    assert "Jane Doe" in text(browser.client.get("/status"))
    # Elsewhere it says what to do next, including the developer's command outside production.
    elsewhere = browser.app.test_client().get(f"/connect/{token}")
    assert elsewhere.status_code == 410
    assert f"linksync connect-link {account}" in text(elsewhere)


def test_expired_manage_session_says_how_to_get_back(browser: Browser, sandbox: Any) -> None:
    account, _ = connected(browser)
    with browser.svc.db.session() as session:
        for manage in session.scalars(select(ManageSession)):
            manage.expires_at = utcnow() - timedelta(seconds=1)
    response = browser.client.get("/status")
    assert response.status_code == 410
    body = text(response)
    assert "settings page" in body and f"linksync connect-link {account} --manage" in body


def test_manage_link_from_the_api_is_claimed_by_the_first_browser(
    browser: Browser, sandbox: Any
) -> None:
    account, _ = connected(browser)
    api = browser.app.test_client()
    minted = api.post(f"/api/v1/accounts/{account}/manage-link", headers=AUTH)
    assert minted.status_code == 201 and set(minted.json) == {"url", "expires_at"}
    path = urlsplit(minted.json["url"]).path
    assert path.startswith("/manage/")
    colleague = Browser(browser.svc)
    opened = colleague.client.get(path)
    assert opened.status_code == 303 and opened.headers["Location"].endswith("/status")
    assert "Jane Doe" in text(colleague.client.get("/status"))
    assert colleague.client.get(path).status_code == 303  # the same browser may reopen it
    thief = browser.app.test_client().get(path)
    assert thief.status_code == 410 and "another browser" in text(thief)
    assert api.post("/api/v1/accounts/acct-never/manage-link", headers=AUTH).status_code == 404
    assert api.post(f"/api/v1/accounts/{account}/manage-link").status_code == 401
    assert api.get(f"{path}x").status_code == 404
    document = api.get("/api/v1/openapi.json").json
    assert (
        "201" in document["paths"]["/api/v1/accounts/{account_id}/manage-link"]["post"]["responses"]
    )
    assert "204" in document["paths"]["/api/v1/connect-sessions/{token}"]["delete"]["responses"]


def test_withdrawn_connect_link_stops_working(browser: Browser, sandbox: Any) -> None:
    account, token = browser.new_connect()
    authorize = browser.start(token)  # a sign-in already under way when it is withdrawn
    api = browser.app.test_client()
    assert api.delete(f"/api/v1/connect-sessions/{token}").status_code == 401
    assert api.delete(f"/api/v1/connect-sessions/{token}", headers=AUTH).status_code == 204
    assert api.delete(f"/api/v1/connect-sessions/{token}", headers=AUTH).status_code == 204
    forged = api.delete(f"/api/v1/connect-sessions/{token}x", headers=AUTH)
    assert forged.status_code == 404 and forged.json["error"]["code"] == "not_found"
    page = browser.client.get(f"/connect/{token}")
    assert page.status_code == 410 and "withdrawn" in text(page)
    response = browser.client.get(browser.consent(authorize))
    assert response.status_code == 410
    with browser.svc.db.session() as session:
        assert session.scalar(select(Connection).where(Connection.account_id == account)) is None


def test_disconnect_asks_and_honours_leave_the_links(
    browser: Browser, sandbox: Any, source: Any
) -> None:
    from service.sync.runner import run_sync

    account, token = browser.new_connect()
    source.store.put_all(account, [event_type(1, account), event_type(2, account)])
    browser.client.get(browser.consent(browser.start(token)))
    run_sync(browser.svc, connection_of(browser, account).id, trigger="manual")
    colleague = Browser(browser.svc)
    minted = colleague.client.post(f"/api/v1/accounts/{account}/manage-link", headers=AUTH)
    colleague.client.get(urlsplit(minted.json["url"]).path)

    confirm = text(browser.client.get("/status/disconnect"))
    assert "Remove the links from Close" in confirm and "Leave them in Close" in confirm
    csrf = browser.csrf("/status/disconnect")
    refused = browser.client.post("/status/disconnect", data={"csrf_token": csrf})
    assert refused.status_code == 400 and "Choose whether" in text(refused)
    assert connection_of(browser, account).status == "active"

    done = browser.client.post("/status/disconnect", data={"csrf_token": csrf, "links": "keep"})
    assert done.status_code == 303
    assert set(our_links(sandbox, "user_jane")) == {"evt_1", "evt_2"}  # left in Close
    assert connection_of(browser, account).status == "disconnected"
    page = text(browser.client.get("/status"))
    assert "left in Close" in page and "Connect to Close again" in page
    # Every other browser's access ended with the disconnect.
    assert colleague.client.get("/status").status_code == 410


def test_disconnect_remove_then_connect_again_from_the_status_view(
    browser: Browser, sandbox: Any, source: Any
) -> None:
    from service.sync.runner import run_sync

    account, token = browser.new_connect()
    source.store.put_all(account, [event_type(1, account)])
    browser.client.get(browser.consent(browser.start(token)))
    run_sync(browser.svc, connection_of(browser, account).id, trigger="manual")
    csrf = browser.csrf("/status/disconnect")
    browser.client.post("/status/disconnect", data={"csrf_token": csrf, "links": "remove"})
    assert our_links(sandbox, "user_jane") == {}
    authorize = browser.client.post("/status/reconnect", data={"csrf_token": csrf})
    assert authorize.status_code == 302
    assert browser.client.get(browser.consent(authorize.headers["Location"])).status_code == 303
    assert connection_of(browser, account).status == "active"


def test_status_page_details(browser: Browser, sandbox: Any) -> None:
    account, _ = connected(browser)
    page = text(browser.client.get("/status"))
    assert "Acme Inc." in page and "Acme Inc.." not in page
    with browser.svc.db.session() as session:
        run = session.scalar(
            select(SyncRun).where(SyncRun.connection_id == connection_of(browser, account).id)
        )
        assert run is not None and run.status == RunStatus.QUEUED and run.progress_total == 0
    page = text(browser.client.get("/status"))
    assert "Reading your event types…" in page and "0 / 0" not in page
    with browser.svc.db.session() as session:
        queued = session.get(SyncRun, run.id)
        assert queued is not None
        queued.status, queued.progress_total, queued.progress_done = RunStatus.RUNNING, 4, 1
    assert "Syncing… 1 / 4" in text(browser.client.get("/status"))
    missing = text(browser.client.get("/connect/not-a-token"))
    assert "This link is not valid" in missing and "(404)" in missing
    assert "not_found" not in missing


def test_cli_connect_link_prints_working_links(browser: Browser, sandbox: Any) -> None:
    account, _ = connected(browser)
    env = settings_env(browser.svc.settings)
    runner = CliRunner()
    fresh = runner.invoke(cli, ["connect-link", account], env=env)
    assert fresh.exit_code == 0, fresh.output
    connect_path = urlsplit(fresh.stdout.strip().splitlines()[0]).path
    assert connect_path.startswith("/connect/")
    other = Browser(browser.svc)
    assert "Reconnect to Close" in text(other.client.get(connect_path))
    manage = runner.invoke(cli, ["connect-link", account, "--manage"], env=env)
    assert manage.exit_code == 0, manage.output
    manage_path = urlsplit(manage.stdout.strip().splitlines()[0]).path
    assert other.client.get(manage_path).status_code == 303
    assert "Jane Doe" in text(other.client.get("/status"))
    missing = runner.invoke(cli, ["connect-link", "acct-none", "--manage"], env=env)
    assert missing.exit_code == 1 and "no connection" in missing.output


def test_callback_state_of_another_link_cannot_be_replayed_into_the_status(
    browser: Browser, sandbox: Any
) -> None:
    """A replayed callback whose flow did not complete is still an error, not a redirect."""
    _, token = browser.new_connect()
    callback = browser.consent(browser.start(token), decision="decline")
    assert browser.client.get(callback).status_code == 400
    state = parse_qs(urlsplit(callback).query)["state"][0]
    again = browser.client.get(f"/oauth/close/callback?error=access_denied&state={state}")
    assert again.status_code == 400 and "already used" in text(again)


@pytest.mark.parametrize("nasty", NASTY)
def test_nasty_manage_and_connect_session_tokens_are_4xx(
    browser: Browser, services: Any, nasty: str
) -> None:
    before = snapshot(services)
    segment = quote(nasty, safe="")
    for method, path, headers in (
        ("get", f"/manage/{segment}", {}),
        ("delete", f"/api/v1/connect-sessions/{segment}", AUTH),
        ("post", f"/api/v1/accounts/{segment}/manage-link", AUTH),
    ):
        response = getattr(browser.client, method)(path, headers=headers)
        assert 400 <= response.status_code < 500, (path, response.status_code)
        assert "Traceback" not in text(response)
    assert snapshot(services) == before
