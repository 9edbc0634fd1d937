"""Hostile input on every public surface: a clear 4xx (JSON for the API, a page for the
browser), never a 5xx or a stack trace, and the database unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from service.app import create_app
from service.infra.models import Connection, ConnectSession, OAuthState, SyncRun, WebhookDelivery
from service.services import Services
from tests.conftest import API_KEY

AUTH = {"Authorization": f"Bearer {API_KEY}"}
NASTY = [
    "../../etc/passwd",
    "..%2F..%2Fetc",
    "' OR '1'='1' --",
    "<script>alert(1)</script>",
    "a\x00b",
    "a" * 300,
    "%00",
    "${jndi:ldap://x}",
    "\u202e\u0000",
]


@pytest.fixture
def client(services: Services) -> Iterator[FlaskClient]:
    yield create_app(services.settings, services=services).test_client()


def snapshot(svc: Services) -> tuple[int, ...]:
    with svc.db.session() as session:
        return tuple(
            session.scalar(select(func.count()).select_from(model)) or 0
            for model in (Connection, ConnectSession, OAuthState, SyncRun, WebhookDelivery)
        )


@pytest.mark.parametrize("nasty", NASTY)
def test_nasty_identifiers_in_every_api_route(
    client: FlaskClient, services: Services, nasty: str
) -> None:
    before = snapshot(services)
    segment = quote(nasty, safe="")
    for method, path in [
        ("get", f"/api/v1/accounts/{segment}/connection"),
        ("get", f"/api/v1/accounts/{segment}/links"),
        ("post", f"/api/v1/accounts/{segment}/sync"),
        ("delete", f"/api/v1/accounts/{segment}/connection"),
        ("get", f"/api/v1/sync-runs/{segment}"),
        ("get", f"/api/v1/accounts/a/links?cursor={segment}&limit={segment}"),
    ]:
        response = getattr(client, method)(path, headers=AUTH)
        assert 400 <= response.status_code < 500, (path, response.status_code)
        assert response.is_json and "Traceback" not in response.get_data(as_text=True)
    response = client.post("/api/v1/connect-sessions", json={"account_id": nasty}, headers=AUTH)
    assert response.status_code in (201, 400)  # odd but harmless ids are allowed, stored verbatim
    if response.status_code == 201:
        before = (before[0], before[1] + 1, *before[2:])
    assert snapshot(services) == before


@pytest.mark.parametrize("nasty", NASTY)
def test_nasty_connect_tokens_get_a_friendly_page(
    client: FlaskClient, services: Services, nasty: str
) -> None:
    before = snapshot(services)
    segment = quote(nasty, safe="")
    for path in (
        f"/connect/{segment}",
        f"/connect/{segment}/status.json",
        f"/oauth/close/callback?state={segment}&code={segment}",
    ):
        response = client.get(path)
        assert 400 <= response.status_code < 500, (path, response.status_code)
        assert "Traceback" not in response.get_data(as_text=True)
    assert snapshot(services) == before


def test_oversized_api_body_is_413_json(client: FlaskClient, services: Services) -> None:
    before = snapshot(services)
    body = '{"account_id": "' + "x" * 200_000 + '"}'
    response = client.post(
        "/api/v1/connect-sessions", data=body, headers=AUTH, content_type="application/json"
    )
    assert response.status_code == 413 and response.is_json
    assert snapshot(services) == before


def test_wrong_content_types_and_methods(client: FlaskClient) -> None:
    assert (
        client.post(
            "/api/v1/connect-sessions", data="<xml/>", headers=AUTH, content_type="application/xml"
        ).status_code
        == 415
    )
    response = client.put("/api/v1/connect-sessions", headers=AUTH)
    assert response.status_code == 405 and "POST" in response.headers["Allow"] and response.is_json
    assert client.get("/no/such/page").status_code == 404


def test_unexpected_errors_are_a_generic_500_without_details(services: Services) -> None:
    app = create_app(services.settings, services=services)

    @app.get("/api/v1/_boom")
    def boom() -> str:
        raise RuntimeError("secret internals")

    response = app.test_client().get("/api/v1/_boom")
    assert response.status_code == 500
    assert "secret internals" not in response.get_data(as_text=True) and response.is_json


# Issue #9, item 12: inputs that used to reach the database or a header and answer 500 ------

ALLOWED_ORIGINS = "https://app.example.com,https://bücher.example,http://[::1]:3000"


@pytest.fixture
def origins_client(services: Services) -> Iterator[FlaskClient]:
    services.settings.RETURN_URL_ALLOWED_ORIGINS = ALLOWED_ORIGINS.split(",")
    yield create_app(services.settings, services=services).test_client()


@pytest.mark.parametrize(
    "return_url",
    [
        "https://app.example.com/done\r\nSet-Cookie: evil=1",
        "https://app.example.com/done\n",
        "https://app.example.com/\x00",
        "https://app.example.com/a\tb",
        "https://app.example.com/\x7f",
        "https://app.example.com/\u0085next-line",
        "https://app.example.com/\u202eevil",
        "https://app.example.com/a b",
        "http://[::1/",  # unterminated IPv6 literal: urlsplit raises
        "http://[zz::1]:3000/",
        "http://[::1]:99999/",
        "http://[::1]:port/",
        "https://exa mple.com/",
        "https://bad..example/",
        "https://-bad-.example/",
        "https://xn--zz.example/",
        "https://" + "a" * 64 + ".example/",
        "https://app.example.com@evil.example/",
        "https://evil.example/?https://app.example.com",
        "https:///nohost",
        "javascript:alert(1)",
    ],
)
def test_hostile_return_urls_are_a_400_naming_return_url(
    origins_client: FlaskClient, services: Services, return_url: str
) -> None:
    before = snapshot(services)
    response = origins_client.post(
        "/api/v1/connect-sessions",
        json={"account_id": "acct-return-url", "return_url": return_url},
        headers=AUTH,
    )
    assert response.status_code == 400, (return_url, response.get_data(as_text=True))
    assert response.json["error"]["field"] == "return_url"
    assert snapshot(services) == before


@pytest.mark.parametrize(
    "return_url",
    [
        "https://app.example.com/done?x=1",
        "HTTPS://APP.EXAMPLE.COM:443/done",
        "https://bücher.example/zurück",
        "https://BÜCHER.example/",
        "https://xn--bcher-kva.example/punycode",
        "http://[::1]:3000/back",
        "http://[0:0:0:0:0:0:0:1]:3000/back",
    ],
)
def test_valid_idn_and_ipv6_return_urls_of_allowed_origins_are_accepted(
    origins_client: FlaskClient, return_url: str
) -> None:
    response = origins_client.post(
        "/api/v1/connect-sessions",
        json={"account_id": "acct-return-url", "return_url": return_url},
        headers=AUTH,
    )
    assert response.status_code == 201, (return_url, response.get_data(as_text=True))


@pytest.mark.parametrize(
    "return_url",
    [
        "https://bucher.example/",
        "http://[::2]:3000/",
        "http://[::1]:3001/",
        "http://app.example.com/",
    ],
)
def test_other_origins_are_refused_even_when_close(
    origins_client: FlaskClient, return_url: str
) -> None:
    response = origins_client.post(
        "/api/v1/connect-sessions",
        json={"account_id": "acct-return-url", "return_url": return_url},
        headers=AUTH,
    )
    assert response.status_code == 400 and response.json["error"]["field"] == "return_url"
    assert "RETURN_URL_ALLOWED_ORIGINS" in response.json["error"]["message"]


@pytest.mark.parametrize(
    "cursor", ["2147483648", "999999999999999999", "18446744073709551616", "²", "1²", "٣"]
)
def test_out_of_range_cursors_are_a_400_on_every_backend(
    client: FlaskClient, services: Services, cursor: str
) -> None:
    account = f"acct-cursor-{cursor.encode().hex()}"
    with services.db.session() as session:
        session.add(Connection(account_id=account, status="active"))
    response = client.get(
        f"/api/v1/accounts/{account}/links", query_string={"cursor": cursor}, headers=AUTH
    )
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.json["error"]["field"] == "cursor"
    # The largest id the database holds is still a valid cursor.
    response = client.get(
        f"/api/v1/accounts/{account}/links", query_string={"cursor": "2147483647"}, headers=AUTH
    )
    assert response.status_code == 200 and response.json["data"] == []


@pytest.mark.parametrize("char", ["\x00", "\x01", "\n", "\r", "\x1f", "\x7f", "\u0085"])
def test_control_characters_in_a_webhook_event_id_are_a_400_naming_id(
    client: FlaskClient, services: Services, char: str
) -> None:
    import json
    import time

    from service.api.signatures import sign
    from tests.conftest import WEBHOOK_SECRET

    before = snapshot(services)
    body = json.dumps(
        {"id": f"evt{char}1", "type": "event_types.changed", "account_id": "acct-webhook"}
    ).encode()
    t = int(time.time())
    response = client.post(
        "/webhooks/source",
        data=body,
        content_type="application/json",
        headers={"X-LinkSync-Signature": f"t={t},v1={sign(WEBHOOK_SECRET, t, body)}"},
    )
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.json["error"]["field"] == "id"
    assert snapshot(services) == before


@pytest.fixture
def operator_client(services: Services) -> FlaskClient:
    from tests.web.test_admin import enable_console, login, new_client

    enable_console(services.settings)
    client = new_client(services)
    assert login(client).status_code == 303
    return client


@pytest.mark.parametrize(
    "ids", ["²", "1,²", "٣", "2147483648", "1,99999999999999999999", "-1", "1e3", "0x10"]
)
def test_bad_run_ids_in_the_console_api_are_a_400_naming_ids(
    operator_client: FlaskClient, ids: str
) -> None:
    response = operator_client.get("/admin/api/runs.json", query_string={"ids": ids})
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.is_json and response.json["error"]["field"] == "ids"


@pytest.mark.parametrize(
    "path",
    [
        "/admin/connections/2147483648",
        "/admin/connections/99999999999999999999999",
        "/admin/connections/0",
        "/admin/connections/%C2%B2",
    ],
)
def test_huge_connection_ids_in_the_console_are_a_404(
    operator_client: FlaskClient, path: str
) -> None:
    response = operator_client.get(path)
    assert response.status_code == 404, response.get_data(as_text=True)
    assert "Traceback" not in response.get_data(as_text=True)
    token_page = operator_client.get("/admin/").get_data(as_text=True)
    import re

    token = re.search(r'name="csrf_token" value="([^"]+)"', token_page)
    if token:
        response = operator_client.post(f"{path}/resync", data={"csrf_token": token.group(1)})
        assert response.status_code == 404
