"""Real headless Chromium (Debian's) driven by Playwright, against our app served over HTTP."""

from __future__ import annotations

import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from service.app import create_app
from service.infra import migrate
from service.services import Services
from service.settings import Settings
from tests.conftest import ARTIFACTS, RecordingEnqueue

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveApp:
    def __init__(self, svc: Services, port: int) -> None:
        self.svc = svc
        self.url = f"http://127.0.0.1:{port}"
        self._server = make_server(
            "127.0.0.1", port, create_app(svc.settings, services=svc), threaded=True
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def live_app(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., LiveApp]]:
    apps: list[LiveApp] = []

    def start(**overrides: Any) -> LiveApp:
        port = free_port()
        settings = make_settings(PUBLIC_URL=f"http://127.0.0.1:{port}", **overrides)
        migrate.upgrade(settings.database_url)
        svc = Services(settings, enqueue=overrides.pop("enqueue", None) or RecordingEnqueue())
        app = LiveApp(svc, port)
        apps.append(app)
        return app

    yield start
    for app in apps:
        app.stop()
        app.svc.close()


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            "Debian's chromium is required for the browser tests: apt-get install -y chromium"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    context = chromium.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    yield page
    context.close()
    csp_violations = [e for e in errors if "Content Security Policy" in e]
    assert not csp_violations, csp_violations


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
