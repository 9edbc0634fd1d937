"""The connect widget in real Chromium, with Chromium's popup blocker ON (Playwright turns it
off by default): the demo integrator's settings page (served by the demo source) connects
through the popup and learns the outcome by postMessage; a popup opened without a user
gesture is blocked and the page falls back to the full-page connect."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from werkzeug.wrappers import Response

from service.connections.sessions import create_connect_session
from service.demo_source.integrator import DemoIntegrator
from service.demo_source.server import DemoSourceServer
from service.events.delivery import deliver_due
from service.infra.background_server import BackgroundServer
from tests.conftest import API_KEY, new_account
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, LiveApp, free_port

pytestmark = pytest.mark.browser

EVENTS_SECRET = "demo-events-secret"


@pytest.fixture(scope="module")
def strict_chromium(chromium: Any) -> Iterator[Any]:
    browser = chromium.browser_type.launch(
        executable_path=CHROMIUM,
        args=CHROMIUM_ARGS,
        ignore_default_args=["--disable-popup-blocking"],
    )
    yield browser
    browser.close()


@pytest.fixture
def strict_page(strict_chromium: Any) -> Iterator[Any]:
    context = strict_chromium.new_context(viewport={"width": 1000, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    context.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    yield page
    context.close()
    assert not [e for e in errors if "Content Security Policy" in e], errors


class Integrator:
    def __init__(self, demo: DemoSourceServer, app: LiveApp, account: str) -> None:
        self.demo, self.app, self.account = demo, app, account
        self.settings_url = f"{demo.url}/settings"


@pytest.fixture
def integrator(live_app: Callable[..., LiveApp], source: Any) -> Iterator[Integrator]:
    account = new_account()
    port = free_port()
    config = DemoIntegrator(
        linksync_url="", api_key=API_KEY, webhook_secret=EVENTS_SECRET, account_id=account
    )
    demo = DemoSourceServer(port=port, integrator=config, token="test-source-token").start()
    app = live_app(
        RETURN_URL_ALLOWED_ORIGINS=demo.url,
        INTEGRATOR_WEBHOOK_URL=f"{demo.url}/_demo/events",
        INTEGRATOR_WEBHOOK_SECRET=EVENTS_SECRET,
    )
    config.linksync_url = app.url
    yield Integrator(demo, app, account)
    demo.stop()


def open_popup(page: Any) -> Any:
    with page.expect_popup() as info:
        page.click("#connect-close")
    popup = info.value
    popup.wait_for_selector("#connect")
    assert "widget_origin=" in popup.url
    return popup


def test_the_widget_connects_in_a_popup_and_the_page_learns_the_outcome(
    integrator: Integrator, strict_page: Any, sandbox: Any
) -> None:
    page = strict_page
    page.goto(integrator.settings_url)
    page.wait_for_selector("text=Acme Scheduling")

    # Declined: the popup closes and the promise resolves "declined".
    popup = open_popup(page)
    popup.click("#connect")
    popup.wait_for_selector("text=Authorize")
    with popup.expect_event("close"):
        popup.click("button[value=decline]")
    page.wait_for_selector("#result[data-status=declined]")

    # Closed by the admin half-way: "closed".
    popup = open_popup(page)
    popup.close()
    page.wait_for_selector("#result[data-status=closed]")

    # Approved: "connected" with the account id, without leaving the settings page.
    popup = open_popup(page)
    popup.click("#connect")
    popup.select_option("select[name=user_id]", "user_jane")
    popup.check("input[name=organization_id][value=orga_acme]")
    with popup.expect_event("close"):
        popup.click("button[value=approve]")
    page.wait_for_selector("#result[data-status=connected]")
    assert page.url == integrator.settings_url
    assert page.inner_text("#result") == f"Connected (account {integrator.account})"

    # The connection.connected event reaches the demo receiver (signed) and the page lists it.
    report = deliver_due(integrator.app.svc)
    assert report.delivered >= 1, report
    page.wait_for_selector("tr.event:has-text('connection.connected')", timeout=5000)
    assert integrator.account in page.inner_text("#events")


def integrator_page(widget_url: str, connect_url: str) -> Any:
    """A bare integrator page whose own script calls connect as it loads (no click)."""
    page = (
        f'<!doctype html><body data-url="{connect_url}"><p>Acme</p>'
        f'<script src="{widget_url}"></script><script src="/go.js"></script></body>'
    )
    script = "window.LinkSync.connect({url: document.body.getAttribute('data-url')});"

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        js = environ["PATH_INFO"] == "/go.js"
        return Response(script if js else page, mimetype="text/javascript" if js else "text/html")(
            environ, start_response
        )

    return BackgroundServer(app).start()


def test_a_blocked_popup_falls_back_to_the_full_page_connect(
    integrator: Integrator, strict_page: Any
) -> None:
    """Without a user gesture Chromium blocks window.open; the widget navigates instead."""
    with integrator.app.svc.db.session() as session:
        _, _, url = create_connect_session(
            session, integrator.app.svc.settings, integrator.account, integrator.settings_url
        )
    server = integrator_page(f"{integrator.app.url}/static/connect.js", url)
    try:
        page = strict_page
        page.goto(server.url + "/")
        page.wait_for_url(url, timeout=10000)
        page.wait_for_selector("#connect")
        assert len(page.context.pages) == 1  # no popup was opened
    finally:
        server.stop()
