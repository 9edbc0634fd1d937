"""The operator console over HTTP, on SQLite and on PostgreSQL + Redis: sign-in, throttle,
session, CSRF, search and filters, constant queries per page, the buttons, and no secrets."""

from __future__ import annotations

import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient
from sqlalchemy import event, select

from service.app import create_app
from service.cli import main as cli
from service.infra import migrate
from service.infra.db import utcnow
from service.infra.models import (
    Connection,
    ConnectionStatus,
    LinkState,
    RunStatus,
    SyncedLink,
    SyncRun,
)
from service.services import Services
from service.settings import Settings
from service.sync.runner import run_sync
from service.web.admin import auth as operators
from service.web.admin.auth import authenticate, hash_password, verify_password
from service.web.admin.presentation import TEMPLATE_HELPERS
from tests.conftest import RecordingEnqueue, new_account
from tests.helpers import connect_directly, event_type

PASSWORD = "correct horse"
PAGES = ("/admin/", "/admin/connections", "/admin/failures")


# Fixtures and helpers --------------------------------------------------------------------


def enable_console(settings: Settings) -> None:
    # A name of its own per test: the per-username throttle counts in Redis, which outlives
    # a test.
    settings.OPERATOR_USERNAME = f"ops-{uuid.uuid4().hex[:8]}"
    settings.OPERATOR_PASSWORD_HASH = hash_password(PASSWORD)


def new_client(svc: Services) -> FlaskClient:
    client = create_app(svc.settings, services=svc).test_client()
    # An address of its own: the throttle counts per (username, address), and Redis outlives
    # a test.
    client.environ_base["REMOTE_ADDR"] = f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.7"
    return client


@pytest.fixture
def svc(services: Services) -> Services:
    enable_console(services.settings)
    return services


@pytest.fixture
def client(svc: Services) -> FlaskClient:
    return new_client(svc)


def csrf_token(client: FlaskClient, path: str = "/admin/login") -> str:
    page = client.get(path).get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, page
    return match.group(1)


def operator_name(client: FlaskClient) -> str:
    return str(client.application.extensions["linksync"].settings.OPERATOR_USERNAME)


def login(
    client: FlaskClient, password: str = PASSWORD, username: str | None = None, **kw: Any
) -> Any:
    username = operator_name(client) if username is None else username
    token = csrf_token(client)
    return client.post(
        "/admin/login",
        data={"username": username, "password": password, "csrf_token": token},
        **kw,
    )


def add_connection(
    svc: Services,
    *,
    org: str = "Acme Inc.",
    email: str = "jane@acme.com",
    status: ConnectionStatus = ConnectionStatus.ACTIVE,
    error_links: int = 0,
    synced_links: int = 0,
) -> int:
    with svc.db.session() as session:
        connection = Connection(
            account_id=new_account(),
            status=status,
            close_user_name="Jane Doe",
            close_user_email=email,
            close_org_id="orga_" + uuid.uuid4().hex[:8],
            close_org_name=org,
            connected_at=utcnow(),
        )
        session.add(connection)
        session.flush()
        for n in range(error_links):
            session.add(
                SyncedLink(
                    connection_id=connection.id,
                    source_id=f"bad_{n}",
                    name=f"Broken type {n}",
                    state=LinkState.ERROR,
                    last_error="url: must be an absolute http(s) URL",
                )
            )
        for n in range(synced_links):
            session.add(
                SyncedLink(connection_id=connection.id, source_id=f"ok_{n}", state=LinkState.SYNCED)
            )
        return connection.id


def rows_of(page: str) -> list[str]:
    """Account ids linked from the connections table."""
    return re.findall(r'href="/admin/connections/\d+">(acct-[0-9a-f]+)<', page)


# Passwords -------------------------------------------------------------------------------


def test_password_hashes_are_scrypt_and_verified_in_constant_time(
    monkeypatch: pytest.MonkeyPatch, make_settings: Callable[..., Settings]
) -> None:
    hashed = hash_password(PASSWORD)
    assert hashed.startswith("scrypt:") and PASSWORD not in hashed
    assert verify_password(hashed, PASSWORD)
    assert not verify_password(hashed, "correct horse ")
    assert not verify_password("", PASSWORD)
    assert not verify_password("not-a-hash", PASSWORD)

    settings = make_settings(OPERATOR_USERNAME="ops", OPERATOR_PASSWORD_HASH=hashed)
    checked: list[str] = []
    real = operators.check_password_hash

    def spy(pwhash: str, password: str) -> bool:
        checked.append(pwhash)
        return real(pwhash, password)

    monkeypatch.setattr(operators, "check_password_hash", spy)
    # An unknown username still pays for a full check against the real hash.
    assert not authenticate(settings, "nobody", PASSWORD)
    assert not authenticate(settings, "ops", "wrong")
    assert authenticate(settings, "ops", PASSWORD)
    assert checked == [hashed, hashed, hashed]


def test_cli_prints_a_hash_that_verifies() -> None:
    result = CliRunner().invoke(cli, ["operator", "hash-password", "--password", "s3cret pass"])
    assert result.exit_code == 0, result.output
    assert verify_password(result.output.strip(), "s3cret pass")


# Access ----------------------------------------------------------------------------------


def test_console_is_disabled_without_credentials(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    migrate.upgrade(settings.database_url)
    client = create_app(settings, services=Services(settings, enqueue=RecordingEnqueue()))
    for path in ("/admin/", "/admin/login", "/admin/connections"):
        response = client.test_client().get(path)
        page = response.get_data(as_text=True)
        assert response.status_code == 404
        assert "OPERATOR_USERNAME" in page and "linksync operator hash-password" in page
        assert 'href="/static/admin.css"' in page  # the console's own page, not the app's
    response = client.test_client().get("/admin/api/activity.json")
    assert response.status_code == 404 and response.json["error"]["code"] == "not_found"


def test_every_page_needs_a_signed_in_operator(svc: Services, client: FlaskClient) -> None:
    cid = add_connection(svc)
    for path in (*PAGES, f"/admin/connections/{cid}", "/admin/connections?q=acme&page=2"):
        response = client.get(path)
        assert response.status_code == 302, path
        assert response.headers["Location"].startswith("/admin/login?next=")
    for path in ("/admin/api/activity.json", "/admin/api/runs.json?ids=1"):
        response = client.get(path)
        assert response.status_code == 401
        assert response.json["error"]["code"] == "unauthorized"
    # A valid CSRF token is not a sign-in.
    token = csrf_token(client)
    response = client.post(f"/admin/connections/{cid}/resync", data={"csrf_token": token})
    assert response.status_code == 302 and "/admin/login" in response.headers["Location"]
    with svc.db.session() as session:
        assert session.scalars(select(SyncRun).where(SyncRun.connection_id == cid)).all() == []


def test_sign_in_wrong_password_and_sign_out(svc: Services, client: FlaskClient) -> None:
    response = login(client, "wrong")
    assert response.status_code == 401 and "Wrong username or password." in response.text
    assert login(client, username="nobody").status_code == 401
    assert login(client, username=operator_name(client).upper()).status_code == 401
    assert client.get("/admin/").status_code == 302

    response = login(client)
    assert response.status_code == 303 and response.headers["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200
    for path in PAGES:
        assert client.get(path).status_code == 200

    response = client.post("/admin/logout", data={"csrf_token": csrf_token(client, "/admin/")})
    assert response.status_code == 303
    assert client.get("/admin/").status_code == 302


def test_logout_invalidates_the_session_on_the_server(svc: Services) -> None:
    client = new_client(svc)
    assert login(client).status_code == 303
    cookie = client.get_cookie("linksync_session")
    assert cookie is not None
    # A copy of the signed-in cookie, as someone who read it off the wire or the disk has.
    thief = new_client(svc)
    thief.set_cookie("linksync_session", cookie.value)
    assert thief.get("/admin/").status_code == 200

    token = csrf_token(client, "/admin/")
    assert client.post("/admin/logout", data={"csrf_token": token}).status_code == 303
    assert client.get("/admin/").status_code == 302
    # The copy is signed and not expired, but the server has forgotten its session.
    assert thief.get("/admin/").status_code == 302
    assert thief.get("/admin/api/activity.json").status_code == 401
    # A fresh sign-in works again, and another session is unaffected by a logout.
    other = new_client(svc)
    assert login(client).status_code == 303 and login(other).status_code == 303
    client.post("/admin/logout", data={"csrf_token": csrf_token(client, "/admin/")})
    assert other.get("/admin/").status_code == 200


def test_hsts_only_when_public_url_is_https(svc: Services) -> None:
    plain = create_app(svc.settings, services=svc).test_client()
    for path in ("/healthz", "/admin/login"):
        assert "Strict-Transport-Security" not in plain.get(path).headers
    svc.settings.PUBLIC_URL = "https://linksync.example.net"
    secure = create_app(svc.settings, services=svc).test_client()
    for path in ("/healthz", "/admin/login", "/api/v1/openapi.json", "/no/such/page"):
        assert secure.get(path).headers["Strict-Transport-Security"] == "max-age=31536000"


def test_session_is_fresh_permanent_and_lasts_eight_hours(
    svc: Services, client: FlaskClient
) -> None:
    with client.session_transaction() as session:
        session["planted"] = "by someone else"
    response = login(client)
    cookie = next(h for h in response.headers.getlist("Set-Cookie") if "linksync_session" in h)
    expires = parsedate_to_datetime(re.search(r"Expires=([^;]+)", cookie).group(1))  # type: ignore[union-attr]
    assert abs(expires - (utcnow() + timedelta(hours=8))) < timedelta(minutes=2)
    assert "HttpOnly" in cookie
    with client.session_transaction() as session:
        assert "planted" not in session
        assert session.permanent
        deadline = session["operator"]["until"]
    assert 8 * 3600 - 60 < deadline - time.time() <= 8 * 3600

    # The deadline is enforced by the server too, whatever the cookie says.
    with client.session_transaction() as session:
        session["operator"] = {**session["operator"], "until": time.time() - 1}
    assert client.get("/admin/").status_code == 302


def test_changing_the_password_signs_everyone_out(svc: Services, client: FlaskClient) -> None:
    login(client)
    assert client.get("/admin/").status_code == 200
    svc.settings.OPERATOR_PASSWORD_HASH = hash_password("a new password")
    assert client.get("/admin/").status_code == 302


def test_sign_in_returns_only_to_console_pages(svc: Services, client: FlaskClient) -> None:
    response = login(client, query_string={"next": "/admin/failures?runs_page=2"})
    assert response.headers["Location"] == "/admin/failures?runs_page=2"
    for evil in ("//evil.example/admin", "https://evil.example/admin/", "/\\evil.example", "/api"):
        other = new_client(svc)
        response = login(other, query_string={"next": evil})
        assert response.status_code == 303 and response.headers["Location"] == "/admin/", evil


# Throttle --------------------------------------------------------------------------------


def test_failures_beyond_three_per_client_wait_longer_and_longer(
    svc: Services, client: FlaskClient
) -> None:
    for _ in range(3):  # free
        assert login(client, "wrong").status_code == 401
    response = login(client, "wrong")
    assert response.status_code == 401 and "Wait 1 second before the next try." in response.text
    # Even the right password is refused during the wait, with a page that says why.
    response = login(client)
    assert response.status_code == 429 and response.headers["Retry-After"] == "1"
    assert "Too many failed sign-ins" in response.text
    assert client.get("/admin/").status_code == 302
    time.sleep(1.1)
    assert login(client, "wrong").status_code == 401  # the 5th failure: 2 seconds
    assert login(client).headers["Retry-After"] == "2"

    # Another address is not slowed down by this one's failures.
    assert login(new_client(svc)).status_code == 303
    time.sleep(2.1)
    assert login(client).status_code == 303  # the right password after the wait


def test_the_waits_double_up_to_their_caps() -> None:
    assert [operators.PER_CLIENT.delay(n) for n in range(1, 16)] == [
        0, 0, 0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900
    ]  # fmt: skip
    assert [operators.PER_USERNAME.delay(n) for n in (10, 11, 12, 16, 17, 40)] == [
        0, 1, 2, 32, 60, 60
    ]  # fmt: skip


def test_one_username_guessed_from_many_addresses_is_slowed_for_a_minute_at_most(
    svc: Services,
) -> None:
    # Behind a load balancer without TRUSTED_PROXY_COUNT every client had one address and
    # 5 failures locked everyone out for 15 minutes; now each address has its own count, and
    # the username's own count only ever costs a short wait.
    for _ in range(10):
        assert login(new_client(svc), "wrong").status_code == 401
    assert login(new_client(svc), "wrong").status_code == 401  # the 11th: 1 second
    response = login(new_client(svc))
    assert response.status_code == 429 and response.headers["Retry-After"] == "1"
    time.sleep(1.1)
    operator = new_client(svc)
    assert login(operator).status_code == 303
    # The operator's success does not wipe the guesses made from elsewhere.
    assert login(new_client(svc), "wrong").status_code == 401  # the 12th: 2 seconds
    assert login(new_client(svc)).headers["Retry-After"] == "2"


def test_the_throttle_is_shared_by_every_web_process(svc: Services) -> None:
    # Two app instances with their own Services over the same store, like two gunicorn workers.
    other_svc = Services(svc.settings, enqueue=RecordingEnqueue())
    try:
        first, second = new_client(svc), new_client(other_svc)
        second.environ_base["REMOTE_ADDR"] = first.environ_base["REMOTE_ADDR"]
        for client in (first, second, first, second):
            assert login(client, "wrong").status_code == 401
        assert login(second).status_code == 429
    finally:
        other_svc.close()


def test_a_successful_sign_in_clears_the_clients_failures(
    svc: Services, client: FlaskClient
) -> None:
    for _ in range(3):
        assert login(client, "wrong").status_code == 401
    assert login(client).status_code == 303
    client.post("/admin/logout", data={"csrf_token": csrf_token(client, "/admin/")})
    for _ in range(3):
        assert login(client, "wrong").status_code == 401
    assert "Wait 1 second" in login(client, "wrong").text


def test_behind_a_trusted_proxy_the_client_is_the_forwarded_address(svc: Services) -> None:
    def through_proxy(settings_count: int, forwarded_for: str) -> FlaskClient:
        svc.settings.TRUSTED_PROXY_COUNT = settings_count
        client = create_app(svc.settings, services=svc).test_client()
        client.environ_base["REMOTE_ADDR"] = proxy
        client.environ_base["HTTP_X_FORWARDED_FOR"] = forwarded_for
        client.environ_base["HTTP_X_FORWARDED_PROTO"] = "https"
        return client

    proxy = f"10.9.{secrets.randbelow(250)}.1"
    attacker = f"198.51.100.{secrets.randbelow(250)}"
    for _ in range(4):
        assert login(through_proxy(1, attacker), "wrong").status_code == 401
    assert login(through_proxy(1, attacker)).status_code == 429
    # Another client behind the same proxy is not held up by the attacker's failures...
    assert login(through_proxy(1, f"203.0.113.{secrets.randbelow(250)}")).status_code == 303
    # ...which is what happens without the setting: the proxy's address is everyone's.
    victim = through_proxy(0, "192.0.2.1")
    for _ in range(4):
        assert (
            login(through_proxy(0, f"192.0.2.{secrets.randbelow(250)}"), "wrong").status_code == 401
        )
    assert login(victim).status_code == 429
    # What the app sees through one trusted proxy: the client's address, scheme and host.
    svc.settings.TRUSTED_PROXY_COUNT = 1
    app = create_app(svc.settings, services=svc)

    @app.get("/_whoami")
    def whoami() -> dict[str, str]:
        from flask import request

        return {"addr": request.remote_addr or "", "url": request.host_url}

    seen = (
        app.test_client()
        .get(
            "/_whoami",
            environ_base={"REMOTE_ADDR": proxy},
            headers={
                "X-Forwarded-For": "spoofed.by.client, 203.0.113.9",
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "linksync.example.net",
            },
        )
        .json
    )
    assert seen == {"addr": "203.0.113.9", "url": "https://linksync.example.net/"}


# CSRF ------------------------------------------------------------------------------------


def test_every_form_needs_its_csrf_token(
    svc: Services, client: FlaskClient, enqueued: RecordingEnqueue
) -> None:
    cid = add_connection(svc)
    response = client.post(
        "/admin/login", data={"username": operator_name(client), "password": PASSWORD}
    )
    assert response.status_code == 400 and "Form expired" in response.text
    assert client.get("/admin/").status_code == 302  # not signed in

    login(client)
    for action in ("resync", "reconcile"):
        for data in ({}, {"csrf_token": "forged"}):
            response = client.post(f"/admin/connections/{cid}/{action}", data=data)
            assert response.status_code == 400
    assert client.post("/admin/logout").status_code == 400
    assert client.get("/admin/").status_code == 200  # still signed in
    assert enqueued.calls == []
    with svc.db.session() as session:
        assert session.scalars(select(SyncRun).where(SyncRun.connection_id == cid)).all() == []


def test_a_form_without_the_session_cookie_says_why(svc: Services) -> None:
    # PUBLIC_URL is https, so the cookie is Secure: a browser on plain http never sends it back,
    # and the page must say so instead of "the form expired".
    svc.settings.PUBLIC_URL = "https://linksync.example.net"
    app = create_app(svc.settings, services=svc)
    assert app.config["SESSION_COOKIE_SECURE"] is True
    over_http = app.test_client()
    token = csrf_token(over_http)
    cookie = over_http.get_cookie("linksync_session")
    assert cookie is not None and cookie.secure
    # What a browser does with a Secure cookie on an http page: it never sends it back.
    over_http.delete_cookie("linksync_session")
    response = over_http.post(
        "/admin/login",
        data={"username": operator_name(over_http), "password": PASSWORD, "csrf_token": token},
    )
    assert response.status_code == 400
    assert "did not send the session cookie: is PUBLIC_URL https while you use http?" in (
        response.text
    )
    response = over_http.post("/connect/some-token/authorize", data={"csrf_token": "x"})
    assert response.status_code == 400 and "did not send the session cookie" in response.text

    # With the cookie (https), a bad token is the usual message.
    over_https = app.test_client()
    over_https.get("/admin/login", base_url="https://localhost")
    response = over_https.post(
        "/admin/login",
        data={"username": operator_name(over_https), "password": PASSWORD, "csrf_token": "forged"},
        base_url="https://localhost",
    )
    assert response.status_code == 400 and "Go back, reload" in response.text
    assert "did not send the session cookie" not in response.text


# Pages -----------------------------------------------------------------------------------


def test_search_is_case_insensitive_and_filters_by_status(
    svc: Services, client: FlaskClient
) -> None:
    tag = uuid.uuid4().hex[:10]
    zed = add_connection(svc, email=f"zed.{tag}@globex.com", org=f"Globex {tag} Corp.")
    amy = add_connection(
        svc, email=f"amy.{tag}@initech.com", org="Initech", status=ConnectionStatus.NEEDS_REAUTH
    )
    with svc.db.session() as session:
        zed_account = session.get(Connection, zed).account_id  # type: ignore[union-attr]
        amy_account = session.get(Connection, amy).account_id  # type: ignore[union-attr]
    login(client)

    def search(**args: str) -> list[str]:
        response = client.get("/admin/connections", query_string=args)
        assert response.status_code == 200
        return rows_of(response.text)

    assert search(q=f"ZED.{tag.upper()}@GLOBEX") == [zed_account]  # email
    assert search(q=f"globex {tag} corp") == [zed_account]  # organization
    assert search(q=zed_account.upper()) == [zed_account]  # account id
    assert set(search(q=tag)) == {zed_account, amy_account}
    assert search(q=tag, status="needs_reauth") == [amy_account]
    assert search(q=tag, status="active") == [zed_account]
    assert search(q=tag, status="disconnected") == []
    assert set(search(q=tag, status="bogus")) == {zed_account, amy_account}  # ignored
    # LIKE wildcards in the search box are literal characters.
    assert search(q=f"{tag}%") == [] and search(q=f"zed_{tag}") == []
    page = client.get("/admin/connections", query_string={"q": tag, "status": "active"}).text
    assert 'option value="active" selected' in page


def test_connections_are_paginated_by_fifty(svc: Services, client: FlaskClient) -> None:
    org = f"Paged {uuid.uuid4().hex[:8]}"
    for _ in range(60):
        add_connection(svc, org=org)
    login(client)
    first = client.get("/admin/connections", query_string={"q": org}).text
    second = client.get("/admin/connections", query_string={"q": org, "page": "2"}).text
    assert len(rows_of(first)) == 50 and len(rows_of(second)) == 10
    assert not set(rows_of(first)) & set(rows_of(second))
    assert "1\u201350 of 60" in first and "51\u201360 of 60" in second  # en dash
    assert "page=2" in first and "q=Paged" in first  # the next link keeps the search
    assert client.get("/admin/connections?page=abc").status_code == 200


def test_a_connections_page_costs_the_same_queries_for_5_or_60_connections(
    svc: Services, client: FlaskClient
) -> None:
    login(client)
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    @contextmanager
    def counting() -> Iterator[list[str]]:
        statements.clear()
        event.listen(svc.db.engine, "before_cursor_execute", record)
        try:
            yield statements
        finally:
            event.remove(svc.db.engine, "before_cursor_execute", record)

    org = f"Counted {uuid.uuid4().hex[:8]}"
    for _ in range(5):
        add_connection(svc, org=org, error_links=1, synced_links=2)
    with counting():
        page = client.get("/admin/connections", query_string={"q": org}).text
    few = list(statements)
    assert len(rows_of(page)) == 5

    for _ in range(55):
        add_connection(svc, org=org, error_links=1, synced_links=2)
    with counting():
        page = client.get("/admin/connections", query_string={"q": org}).text
    assert len(rows_of(page)) == 50

    # One query for the page (its total from a window count), one grouped query for the
    # link counts of the page's connections: no query per row. (Without Redis, the operator
    # session check reads the coordination table once per request, whatever the page.)
    def page_queries(recorded: list[str]) -> list[str]:
        session_checks = [q for q in recorded if "coordination_keys" in q]
        assert len(session_checks) <= 1, session_checks
        return [q for q in recorded if "coordination_keys" not in q]

    assert len(page_queries(statements)) == len(page_queries(few)) == 2, statements


def test_connection_page_shows_runs_and_link_errors_first_and_no_secrets(
    svc: Services, client: FlaskClient, sandbox: Any, source: Any
) -> None:
    account = new_account()
    items = [event_type(n, account) for n in range(1, 6)]
    items.append(event_type(6, account, url="/relative/path"))
    source.store.put_all(account, items)
    cid = connect_directly(svc, sandbox, account)
    run_sync(svc, cid, trigger="manual")
    with svc.db.session() as session:
        connection = session.get(Connection, cid)
        assert connection is not None
        secrets_ = [
            connection.access_token_enc,
            connection.refresh_token_enc,
            svc.cipher.decrypt(connection.access_token_enc or ""),
            svc.cipher.decrypt(connection.refresh_token_enc or ""),
        ]
    login(client)

    page = client.get(f"/admin/connections/{cid}").text
    assert account in page and "Jane Doe" in page and "jane@acme.com" in page
    assert "Acme Inc." in page
    runs = page.split('id="runs"')[1].split("</table>")[0]
    assert "manual" in runs and "partial" in runs
    links = page.split('id="links"')[1].split("</table>")[0]
    assert links.index("evt_6") < links.index("evt_1")  # errors first
    assert links.count("badge-synced") == 5 and links.count("badge-error") == 1

    bodies = [client.get(path).text for path in (*PAGES, f"/admin/connections?q={account}")]
    bodies += [page, client.get("/admin/api/activity.json").text]
    with svc.db.session() as session:
        run_ids = session.scalars(select(SyncRun.id).where(SyncRun.connection_id == cid)).all()
    bodies.append(client.get(f"/admin/api/runs.json?ids={','.join(map(str, run_ids))}").text)
    for body in bodies:
        for secret in secrets_:
            assert secret and secret not in body
        assert "gAAAAA" not in body  # no Fernet token of any kind


def test_unknown_connection_is_a_console_404(svc: Services, client: FlaskClient) -> None:
    login(client)
    response = client.get("/admin/connections/987654321")
    assert response.status_code == 404 and "no connection #987654321" in response.text
    assert 'href="/static/admin.css"' in response.text


def test_resync_and_reconcile_queue_runs_and_enqueue_after_commit(
    svc: Services, client: FlaskClient
) -> None:
    cid = add_connection(svc)
    seen: list[tuple[int, str, int | None, str | None]] = []

    def enqueue(connection_id: int, trigger: str, run_id: int | None) -> None:
        # Called only once the run is committed: a fresh session (a worker) can read it.
        with svc.db.session() as session:
            run = session.get(SyncRun, run_id)
            seen.append((connection_id, trigger, run_id, run.status if run else None))

    svc.enqueue = enqueue
    login(client)
    token = csrf_token(client, f"/admin/connections/{cid}")
    for action in ("resync", "reconcile"):
        response = client.post(f"/admin/connections/{cid}/{action}", data={"csrf_token": token})
        assert response.status_code == 303
        assert response.headers["Location"] == f"/admin/connections/{cid}"

    with svc.db.session() as session:
        runs = session.scalars(
            select(SyncRun).where(SyncRun.connection_id == cid).order_by(SyncRun.id)
        ).all()
    assert [(r.trigger, r.status) for r in runs] == [("manual", "queued"), ("reconcile", "queued")]
    assert seen == [
        (cid, "manual", runs[0].id, "queued"),
        (cid, "reconcile", runs[1].id, "queued"),
    ]
    page = client.get(f"/admin/connections/{cid}").text
    assert f"Reconcile queued as run #{runs[1].id}." in page
    assert page.count("badge-queued") == 2


def test_a_connection_that_cannot_sync_is_not_queued(
    svc: Services, client: FlaskClient, enqueued: RecordingEnqueue
) -> None:
    cid = add_connection(svc, status=ConnectionStatus.NEEDS_REAUTH)
    login(client)
    page = client.get(f"/admin/connections/{cid}").text
    assert 'id="resync" disabled' in page
    token = csrf_token(client, f"/admin/connections/{cid}")
    response = client.post(
        f"/admin/connections/{cid}/resync", data={"csrf_token": token}, follow_redirects=True
    )
    assert "Not started: the connection is needs_reauth." in response.text
    assert enqueued.calls == []


def test_dashboard_and_activity_show_running_runs_with_progress(
    svc: Services, client: FlaskClient
) -> None:
    cid = add_connection(svc, error_links=1)
    with svc.db.session() as session:
        run = SyncRun(
            connection_id=cid,
            trigger="schedule",
            status=RunStatus.RUNNING,
            started_at=utcnow(),
            progress_done=3,
            progress_total=10,
        )
        session.add(run)
        session.flush()
        run_id = run.id
        account = session.get(Connection, cid).account_id  # type: ignore[union-attr]
    login(client)
    page = client.get("/admin/").text
    assert "<title>Dashboard · LinkSync operator</title>" in page
    assert account in page and "3 / 10" in page and 'data-stat="links.error"' in page

    activity = client.get("/admin/api/activity.json")
    assert activity.headers["Cache-Control"] == "no-store"
    data = activity.json
    ours = next(r for r in data["running"] if r["id"] == run_id)
    assert (ours["account_id"], ours["done"], ours["total"]) == (account, 3, 10)
    assert data["connections"]["active"] >= 1 and data["links"]["error"] >= 1
    assert data["last_hour"]["running"] >= 1

    runs = client.get(f"/admin/api/runs.json?ids={run_id},,").json["runs"]
    assert [(r["id"], r["status"], r["done"]) for r in runs] == [(run_id, "running", 3)]
    refused = client.get(f"/admin/api/runs.json?ids={run_id},x")
    assert refused.status_code == 400 and refused.json["error"]["field"] == "ids"


def test_failures_list_failed_runs_and_links_in_error(svc: Services, client: FlaskClient) -> None:
    cid = add_connection(svc, error_links=2)
    marker = f"source answered 500 ({uuid.uuid4().hex[:6]})"
    with svc.db.session() as session:
        session.add_all(
            [
                SyncRun(connection_id=cid, trigger="schedule", status="failed", error=marker),
                SyncRun(connection_id=cid, trigger="schedule", status="succeeded", error="ok-run"),
            ]
        )
    login(client)
    page = client.get("/admin/failures").text
    assert marker in page and "ok-run" not in page
    assert "url: must be an absolute http(s) URL" in page
    assert client.get("/admin/failures?runs_page=2&links_page=3").status_code == 200


def test_dashboard_shows_a_running_runs_start_in_the_consoles_one_time_format(
    svc: Services, client: FlaskClient
) -> None:
    cid = add_connection(svc)
    started = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    with svc.db.session() as session:
        session.add(
            SyncRun(
                connection_id=cid,
                trigger="schedule",
                status=RunStatus.RUNNING,
                started_at=started,
                progress_total=1,
            )
        )
    login(client)
    page = client.get("/admin/").text
    assert '<td class="nowrap">2026-03-04 05:06:07 UTC</td>' in page


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC),
        "2026-03-04T05:06:07+00:00",
        "2026-03-04T07:06:07+02:00",
        datetime(2026, 3, 4, 5, 6, 7),  # naive: UTC by convention
    ],
)
def test_every_console_time_is_utc_with_the_zone(value: datetime | str) -> None:
    assert TEMPLATE_HELPERS["timestamp"](value) == "2026-03-04 05:06:07 UTC"


def test_admin_js_writes_times_as_the_server_does() -> None:
    script = (Path(__file__).parents[2] / "service/web/static/admin.js").read_text()
    assert "toLocale" not in script and ".slice(11, 19)" not in script
    assert 'toISOString().slice(0, 19).replace("T", " ") + " UTC"' in script
