"""Property fuzzing of the inputs that used to answer 500 (issue #9, item 12), on SQLite and on
PostgreSQL: whatever the text, a documented 2xx or a 4xx naming the field, never a 5xx."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.api.signatures import sign
from service.app import create_app
from service.infra.models import Connection
from service.services import Services
from tests.conftest import API_KEY, WEBHOOK_SECRET
from tests.web.test_admin import enable_console, login, new_client

AUTH = {"Authorization": f"Bearer {API_KEY}"}
FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
# Text that leans on the characters that broke things: digits of other scripts, superscripts,
# control characters, brackets, IDN, separators.
NASTY_TEXT = st.text(
    alphabet=st.one_of(
        st.sampled_from("0123456789²³٣۹:/[]@%.,-_?#\r\n\t\x00\x7f\u0085\u202e üß.xn--"),
        st.characters(exclude_categories=["Cs"]),
    ),
    max_size=40,
)
URLS = st.one_of(
    NASTY_TEXT,
    st.builds(
        lambda scheme, rest: f"{scheme}://{rest}", st.sampled_from(["http", "https"]), NASTY_TEXT
    ),
    st.builds(lambda rest: f"https://app.example.com/{rest}", NASTY_TEXT),
    st.builds(lambda rest: f"http://[::1]:3000{rest}", NASTY_TEXT),
)


@pytest.fixture
def client(services: Services) -> FlaskClient:
    services.settings.RETURN_URL_ALLOWED_ORIGINS = [
        "https://app.example.com",
        "https://xn--bcher-kva.example",
        "http://[::1]:3000",
    ]
    return create_app(services.settings, services=services).test_client()


def _field_error(response: Any, field: str) -> None:
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.is_json and response.json["error"]["field"] == field


@FUZZ
@given(return_url=URLS)
def test_return_url_is_201_or_a_400_naming_it(client: FlaskClient, return_url: str) -> None:
    response = client.post(
        "/api/v1/connect-sessions",
        json={"account_id": "acct-fuzz", "return_url": return_url},
        headers=AUTH,
    )
    if response.status_code != 201:
        _field_error(response, "return_url")
    else:
        assert not any(ch in return_url for ch in "\r\n\x00")


@FUZZ
@given(cursor=NASTY_TEXT | st.integers(min_value=0, max_value=10**30).map(str))
def test_links_cursor_is_200_or_a_400_naming_it(
    client: FlaskClient, services: Services, cursor: str
) -> None:
    with services.db.session() as session:
        if session.query(Connection).filter_by(account_id="acct-fuzz-cursor").first() is None:
            session.add(Connection(account_id="acct-fuzz-cursor", status="active"))
    response = client.get(
        "/api/v1/accounts/acct-fuzz-cursor/links", query_string={"cursor": cursor}, headers=AUTH
    )
    if response.status_code != 200:
        _field_error(response, "cursor")


@FUZZ
@given(event_id=NASTY_TEXT)
def test_webhook_event_id_is_accepted_or_a_400_naming_it(
    client: FlaskClient, event_id: str
) -> None:
    body = json.dumps(
        {"id": event_id, "type": "event_types.changed", "account_id": "acct-fuzz-hook"}
    ).encode()
    t = int(time.time())
    response = client.post(
        "/webhooks/source",
        data=body,
        content_type="application/json",
        headers={"X-LinkSync-Signature": f"t={t},v1={sign(WEBHOOK_SECRET, t, body)}"},
    )
    # 404: the account has no connection, which is checked after the body is valid.
    if response.status_code not in (202, 404):
        _field_error(response, "id")


@pytest.fixture
def operator(services: Services) -> FlaskClient:
    enable_console(services.settings)
    client = new_client(services)
    assert login(client).status_code == 303
    return client


@FUZZ
@given(
    ids=NASTY_TEXT
    | st.lists(st.integers(min_value=-5, max_value=2**40)).map(lambda xs: ",".join(map(str, xs)))
)
def test_console_run_ids_are_200_or_a_400_naming_them(operator: FlaskClient, ids: str) -> None:
    response = operator.get("/admin/api/runs.json", query_string={"ids": ids})
    if response.status_code != 200:
        _field_error(response, "ids")


@FUZZ
@given(number=st.integers(min_value=0, max_value=10**25))
def test_console_connection_ids_out_of_range_are_a_404(operator: FlaskClient, number: int) -> None:
    status = operator.get(f"/admin/connections/{number}").status_code
    # In range, an id may belong to a connection of another test (the database is shared).
    assert status == 404 or (status == 200 and 1 <= number < 2**31), (number, status)
