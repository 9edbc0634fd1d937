"""The connect widget's server side: the opener's origin is checked against
RETURN_URL_ALLOWED_ORIGINS before anything is kept, and the page that ends the flow carries
the outcome (for static/connect-done.js) only for the flow that the widget started."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from service.infra import migrate
from service.services import Services
from service.settings import Settings
from tests.conftest import RecordingEnqueue
from tests.connections.test_connect_flow import Browser

OPENER = "http://127.0.0.1:8200"


@pytest.fixture
def browser(make_settings: Callable[..., Settings]) -> Iterator[Browser]:
    settings = make_settings(RETURN_URL_ALLOWED_ORIGINS=f"{OPENER},https://app.example.com")
    migrate.upgrade(settings.database_url)
    svc = Services(settings, enqueue=RecordingEnqueue())
    yield Browser(svc)
    svc.close()


def widget_data(page: str) -> dict[str, str] | None:
    tag = re.search(r'<div id="linksync-widget"[^>]*>', page)
    if tag is None:
        return None
    assert "connect-done.js" in page
    return dict(re.findall(r'data-([a-z-]+)="([^"]*)"', tag.group(0)))


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example.com",  # not allowed
        "http://127.0.0.1:8200/settings",  # an allowed origin with a path
        "http://127.0.0.1:8200.evil.example.com",
        "https://127.0.0.1:8200",  # another scheme
        "javascript:alert(1)",
        "",
    ],
)
def test_a_widget_origin_not_allowed_is_refused_with_a_page_and_kept_nowhere(
    browser: Browser, origin: str
) -> None:
    _account, token = browser.new_connect()
    response = browser.client.get(f"/connect/{token}", query_string={"widget_origin": origin})
    assert response.status_code == 400 and response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert "widget_origin" in page and "Traceback" not in page
    assert widget_data(page) is None and "connect-done.js" not in page
    with browser.client.session_transaction() as cookie:
        assert not cookie.get("widget_flows")
    as_json = browser.client.get(
        f"/connect/{token}",
        query_string={"widget_origin": origin},
        headers={"Accept": "application/json"},
    )
    assert as_json.status_code == 400 and as_json.json["error"]["field"] == "widget_origin"


def test_a_widget_connect_ends_on_the_status_view_with_the_outcome_for_the_opener(
    browser: Browser, sandbox: Any
) -> None:
    account, token = browser.new_connect(return_url=f"{OPENER}/settings")
    page = browser.client.get(f"/connect/{token}", query_string={"widget_origin": OPENER})
    assert page.status_code == 200 and widget_data(page.get_data(as_text=True)) is None
    callback = browser.consent(browser.start(token))
    response = browser.client.get(callback)
    # In the popup the status view ends the flow, not return_url (that is the full-page flow).
    assert response.status_code == 303 and response.headers["Location"].endswith("/status")
    status = browser.client.get("/status").get_data(as_text=True)
    assert "Jane Doe" in status
    assert widget_data(status) == {
        "origin": OPENER,
        "status": "connected",
        "account-id": account,
        "member-id": "",
    }
    # Said once: a reload of the status view posts nothing more.
    assert widget_data(browser.client.get("/status").get_data(as_text=True)) is None


def test_without_the_widget_the_callback_still_follows_return_url(
    browser: Browser, sandbox: Any
) -> None:
    _account, token = browser.new_connect(return_url=f"{OPENER}/settings")
    browser.client.get(f"/connect/{token}")
    response = browser.client.get(browser.consent(browser.start(token)))
    assert response.status_code == 303 and response.headers["Location"] == f"{OPENER}/settings"
    assert widget_data(browser.client.get("/status").get_data(as_text=True)) is None


def test_a_declined_widget_connect_tells_the_opener_declined(
    browser: Browser, sandbox: Any
) -> None:
    account, token = browser.new_connect()
    browser.client.get(f"/connect/{token}", query_string={"widget_origin": OPENER})
    response = browser.client.get(browser.consent(browser.start(token), decision="decline"))
    assert response.status_code == 400
    assert widget_data(response.get_data(as_text=True)) == {
        "origin": OPENER,
        "status": "declined",
        "account-id": account,
        "member-id": "",
    }


def test_a_failed_callback_or_a_dead_link_tells_the_opener_error(
    browser: Browser, sandbox: Any
) -> None:
    account, token = browser.new_connect()
    browser.client.get(f"/connect/{token}", query_string={"widget_origin": OPENER})
    authorize = browser.start(token)
    callback = browser.consent(authorize)
    response = browser.client.get(callback.replace("code=", "code=x"))  # a forged code
    assert response.status_code == 400
    data = widget_data(response.get_data(as_text=True))
    assert data is not None and data["status"] == "error" and data["account-id"] == account

    # A forged connect link opened by the widget: an error page that still tells the opener.
    forged = browser.client.get("/connect/not-a-token", query_string={"widget_origin": OPENER})
    assert forged.status_code == 404
    data = widget_data(forged.get_data(as_text=True))
    assert data is not None and data["status"] == "error" and data["origin"] == OPENER


def test_the_widget_script_is_served_with_a_long_cache(browser: Browser) -> None:
    response = browser.client.get("/static/connect.js")
    assert response.status_code == 200 and "javascript" in response.mimetype
    assert response.cache_control.max_age == 86400 and response.cache_control.public
    assert "LinkSync.connect" in response.get_data(as_text=True)
    done = browser.client.get("/static/connect-done.js")
    assert done.status_code == 200 and done.cache_control.max_age != 86400
