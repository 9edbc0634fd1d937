"""The admin's connect flow through HTTP: our app (test client) and the real sandbox (requests).
Every abuse of the callback gets a friendly 4xx page and stores nothing."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from flask.testing import FlaskClient
from sqlalchemy import func, select

from service.app import create_app
from service.connections.sessions import create_connect_session
from service.infra import migrate
from service.infra.db import utcnow
from service.infra.models import Connection, ConnectSession, OAuthState
from service.services import Services
from service.settings import Settings
from tests.conftest import RecordingEnqueue, new_account
from tests.helpers import connect_directly


class Browser:
    """The admin's browser: our app through the test client, Close's pages through requests."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self.app = create_app(svc.settings, services=svc)
        self.client: FlaskClient = self.app.test_client()

    def new_connect(self, account: str | None = None, **kwargs: Any) -> tuple[str, str]:
        account = account or new_account()
        with self.svc.db.session() as session:
            _, token, _ = create_connect_session(session, self.svc.settings, account, **kwargs)
        return account, token

    def csrf(self, path: str) -> str:
        page = self.client.get(path).get_data(as_text=True)
        match = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert match, page
        return match.group(1)

    def start(self, token: str) -> str:
        """Click Connect; return Close's authorize URL."""
        response = self.client.post(
            f"/connect/{token}/authorize", data={"csrf_token": self.csrf(f"/connect/{token}")}
        )
        assert response.status_code == 302
        return response.headers["Location"]

    def consent(
        self,
        authorize_url: str,
        decision: str = "approve",
        user: str = "user_jane",
        org: str = "orga_acme",
    ) -> str:
        """Decide on the sandbox's consent page; return the callback path+query."""
        page = requests.get(authorize_url, timeout=5)
        assert page.status_code == 200 and "Approve" in page.text
        query = {k: v[0] for k, v in parse_qs(urlsplit(authorize_url).query).items()}
        answer = requests.post(
            authorize_url.split("?")[0],
            data={**query, "decision": decision, "user_id": user, "organization_id": org},
            allow_redirects=False,
            timeout=5,
        )
        assert answer.status_code == 302
        location = urlsplit(answer.headers["Location"])
        return f"{location.path}?{location.query}"


@pytest.fixture
def browser(services: Services) -> Browser:
    return Browser(services)


def connections(svc: Services, account: str) -> int:
    with svc.db.session() as session:
        return (
            session.scalar(
                select(func.count()).select_from(Connection).where(Connection.account_id == account)
            )
            or 0
        )


def test_connect_flow_stores_encrypted_tokens_and_enqueues_the_first_sync(
    browser: Browser, sandbox: Any, enqueued: RecordingEnqueue, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    account, token = browser.new_connect()
    callback = browser.consent(browser.start(token))
    response = browser.client.get(callback)
    assert response.status_code == 303 and response.headers["Location"].endswith("/status")
    page = browser.client.get("/status").get_data(as_text=True)
    assert (
        "Jane Doe" in page
        and "jane@acme.com" in page
        and "Acme Inc." in page
        and "Connected" in page
    )
    with browser.svc.db.session() as session:
        connection = session.scalar(select(Connection).where(Connection.account_id == account))
        assert connection is not None and connection.status == "active"
        stored = browser.svc.cipher.decrypt(connection.refresh_token_enc or "")
    live = [g for g in sandbox.state.grants.values() if g.user_id == "user_jane"]
    assert stored == live[-1].refresh_token and connection.refresh_token_enc != stored
    assert enqueued.calls and enqueued.calls[-1][:2] == (connection.id, "connect")
    # Tokens never appear in logs or pages.
    secrets_seen = {live[-1].refresh_token, *sandbox.state.access_tokens}
    for secret in secrets_seen:
        assert secret not in caplog.text and secret not in page


def test_declined_consent_shows_a_friendly_page_and_stores_nothing(
    browser: Browser, sandbox: Any
) -> None:
    account, token = browser.new_connect()
    response = browser.client.get(browser.consent(browser.start(token), decision="decline"))
    assert response.status_code == 400
    text = response.get_data(as_text=True)
    assert "declined" in text and "Try again" in text and "Traceback" not in text
    assert connections(browser.svc, account) == 0


@pytest.mark.parametrize(
    "abuse",
    [
        "missing_state",
        "forged_state",
        "other_browser",
        "replayed_state",
        "expired_state",
        "reused_code",
        "other_error",
        "no_code",
    ],
)
def test_callback_abuse_is_refused_and_stores_nothing(
    browser: Browser, sandbox: Any, abuse: str
) -> None:
    account, token = browser.new_connect()
    authorize = browser.start(token)
    callback = browser.consent(authorize)
    state = parse_qs(urlsplit(callback).query)["state"][0]
    code = parse_qs(urlsplit(callback).query)["code"][0]
    if abuse == "missing_state":
        response = browser.client.get(f"/oauth/close/callback?code={code}")
    elif abuse == "forged_state":
        response = browser.client.get(
            f"/oauth/close/callback?code={code}&state=forged-{state[:10]}"
        )
    elif abuse == "other_browser":
        response = browser.app.test_client().get(callback)
    elif abuse == "replayed_state":
        assert browser.client.get(callback).status_code == 303
        with browser.svc.db.session() as session:
            session.query(Connection).filter(Connection.account_id == account).delete()
        response = browser.client.get(callback)
    elif abuse == "expired_state":
        with browser.svc.db.session() as session:
            pending = session.get(OAuthState, state)
            assert pending is not None
            pending.expires_at = utcnow() - timedelta(seconds=1)
        response = browser.client.get(callback)
    elif abuse == "reused_code":
        # A second authorization in the same browser, answered with the first (used) code.
        assert browser.client.get(callback).status_code == 303
        with browser.svc.db.session() as session:
            session.query(Connection).filter(Connection.account_id == account).delete()
        _, fresh = browser.new_connect(account)
        second = parse_qs(urlsplit(browser.start(fresh)).query)["state"][0]
        response = browser.client.get(f"/oauth/close/callback?code={code}&state={second}")
    elif abuse == "other_error":
        response = browser.client.get(f"/oauth/close/callback?error=server_error&state={state}")
    else:
        response = browser.client.get(f"/oauth/close/callback?state={state}")
    assert 400 <= response.status_code < 500
    text = response.get_data(as_text=True)
    assert "<html" in text and "Traceback" not in text
    assert connections(browser.svc, account) == 0


def test_expired_and_tampered_connect_links(browser: Browser) -> None:
    _, token = browser.new_connect()
    assert browser.client.get(f"/connect/{token}x").status_code == 404
    with browser.svc.db.session() as session:
        for connect in session.scalars(select(ConnectSession)):
            connect.expires_at = utcnow() - timedelta(seconds=1)
    response = browser.client.get(f"/connect/{token}")
    assert response.status_code == 410 and "expired" in response.get_data(as_text=True)


def test_forms_need_the_csrf_token(browser: Browser) -> None:
    _, token = browser.new_connect()
    for path in (
        f"/connect/{token}/authorize",
        "/status/sync",
        "/status/disconnect",
        "/status/reconnect",
    ):
        response = browser.client.post(path)
        assert response.status_code == 400 and "Reload the page" in response.get_data(as_text=True)


def test_reconnect_same_user_replaces_tokens_other_user_moves_the_connection(
    browser: Browser, sandbox: Any, source: Any
) -> None:
    from service.sync.runner import run_sync
    from tests.helpers import event_type, our_links

    account, token = browser.new_connect()
    source.store.put_all(account, [event_type(1, account), event_type(2, account)])
    browser.client.get(browser.consent(browser.start(token)))
    with browser.svc.db.session() as session:
        connection = session.scalar(select(Connection).where(Connection.account_id == account))
        assert connection is not None
        cid, first_generation = connection.id, connection.token_generation
    run_sync(browser.svc, cid, trigger="manual")
    assert set(our_links(sandbox, "user_jane")) == {"evt_1", "evt_2"}

    # Each reconnect needs a fresh link: a connect link is single-use.
    _, token = browser.new_connect(account)
    browser.client.get(browser.consent(browser.start(token)))  # same user again
    with browser.svc.db.session() as session:
        connection = session.get(Connection, cid)
        assert connection is not None and connection.token_generation > first_generation
    assert set(our_links(sandbox, "user_jane")) == {"evt_1", "evt_2"}

    _, token = browser.new_connect(account)
    browser.client.get(browser.consent(browser.start(token), user="user_john", org="orga_acme"))
    assert our_links(sandbox, "user_jane") == {}  # the old user's links were removed first
    with browser.svc.db.session() as session:
        connection = session.get(Connection, cid)
        assert connection is not None and connection.close_user_id == "user_john"
    run_sync(browser.svc, cid, trigger="manual")
    assert set(our_links(sandbox, "user_john")) == {"evt_1", "evt_2"}


def test_one_accounts_token_never_reaches_another_account(browser: Browser, sandbox: Any) -> None:
    victim = new_account()
    connect_directly(browser.svc, sandbox, victim)
    _, attacker_token = browser.new_connect()
    page = browser.client.get(f"/connect/{attacker_token}").get_data(as_text=True)
    assert "Connect to Close" in page and "Jane Doe" not in page and victim not in page
    # The status view needs a manage session; a connect token is not one.
    status = browser.client.get("/status.json")
    assert status.status_code == 401 and victim not in status.get_data(as_text=True)
    csrf = browser.csrf(f"/connect/{attacker_token}")
    assert browser.client.post("/status/sync", data={"csrf_token": csrf}).status_code == 401
    with browser.svc.db.session() as session:
        connection = session.scalar(select(Connection).where(Connection.account_id == victim))
        assert connection is not None and connection.status == "active"


def test_security_headers_and_cookie_flags(browser: Browser) -> None:
    _, token = browser.new_connect()
    response = browser.client.get(f"/connect/{token}")
    csp = response.headers["Content-Security-Policy"]
    assert (
        "script-src 'self'" in csp
        and "unsafe-inline" not in csp
        and "frame-ancestors 'none'" in csp
    )
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    cookie = response.headers.get("Set-Cookie", "")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_secure_cookie_outside_dev(make_settings: Callable[..., Settings]) -> None:
    from tests.test_settings import STRONG  # production refuses the test fixtures' secrets

    settings = make_settings(**{**STRONG, "PUBLIC_URL": "https://linksync.example.com"})
    migrate.upgrade(settings.database_url)
    app = create_app(settings, services=Services(settings, enqueue=RecordingEnqueue()))
    assert app.config["SESSION_COOKIE_SECURE"] is True
