"""The demo integrator beside the demo source: its event receiver verifies LinkSync's
signature (what an integrator must do), and its settings page asks LinkSync for a connect
session server-side with the API key."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from service.demo_source.integrator import DemoIntegrator
from service.demo_source.server import DemoSourceServer
from service.events.delivery import sign

SECRET = "demo-events-secret"


@pytest.fixture
def demo() -> Iterator[DemoSourceServer]:
    integrator = DemoIntegrator(
        linksync_url="http://127.0.0.1:9", api_key=None, webhook_secret=SECRET
    )
    with DemoSourceServer(integrator=integrator) as server:
        yield server


def post(demo: DemoSourceServer, event: dict[str, Any], secret: str, skew: int = 0) -> Any:
    body = json.dumps(event).encode()
    t = int(time.time()) + skew
    return requests.post(
        f"{demo.url}/_demo/events",
        data=body,
        headers={
            "Content-Type": "application/json",
            "X-LinkSync-Signature": f"t={t},v1={sign(secret, t, body)}",
        },
        timeout=5,
    )


def listed(demo: DemoSourceServer) -> list[str]:
    return [e["id"] for e in requests.get(f"{demo.url}/_demo/events", timeout=5).json()["data"]]


def test_a_signed_event_is_listed_once_and_a_forged_one_is_refused(
    demo: DemoSourceServer,
) -> None:
    event = {"id": "evt_1", "type": "connection.connected", "account_id": "a", "data": {}}
    assert post(demo, event, SECRET).status_code == 200
    assert post(demo, event, SECRET).status_code == 200  # at least once: a repeat is ignored
    assert listed(demo) == ["evt_1"]

    forged = {**event, "id": "evt_2"}
    assert post(demo, forged, "not-the-secret").status_code == 401
    assert post(demo, forged, SECRET, skew=-600).status_code == 401  # a replayed old one
    unsigned = requests.post(f"{demo.url}/_demo/events", json=forged, timeout=5)
    assert unsigned.status_code == 401 and "X-LinkSync-Signature" in unsigned.json()["error"]
    tampered = requests.post(
        f"{demo.url}/_demo/events",
        data=json.dumps({**forged, "type": "connection.disconnected"}),
        headers={"X-LinkSync-Signature": post_header(forged)},
        timeout=5,
    )
    assert tampered.status_code == 401
    assert listed(demo) == ["evt_1"]


def post_header(event: dict[str, Any]) -> str:
    t = int(time.time())
    return f"t={t},v1={sign(SECRET, t, json.dumps(event).encode())}"


def test_the_settings_page_loads_the_widget_from_linksync(demo: DemoSourceServer) -> None:
    page = requests.get(f"{demo.url}/settings", timeout=5)
    assert page.status_code == 200 and "Connect to Close" in page.text
    assert 'src="http://127.0.0.1:9/static/connect.js"' in page.text
    assert "script-src 'self' http://127.0.0.1:9" in page.headers["Content-Security-Policy"]
    # Without an API key it says so, rather than failing obscurely.
    answer = requests.post(f"{demo.url}/_demo/connect-session", timeout=5)
    assert answer.status_code == 503 and "API" in answer.json()["error"]
