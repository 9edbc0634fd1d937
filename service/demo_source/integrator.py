"""The integrator's side of a connect, as a demo: an "Acme Scheduling settings" page with a
"Connect to Close" button (the LinkSync widget, loaded from the LinkSync web app), the
server-side call that makes a connect session with the integrator's API key, and a receiver
of LinkSync's signed events (`POST /_demo/events`) that the page lists.

What a real integrator writes, kept small: it is a simulator beside the demo source and
imports nothing of the service but infra (tests/architecture/test_imports.py)."""

from __future__ import annotations

import collections
import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import requests
from flask import Flask, Response, jsonify, request
from markupsafe import escape

EVENTS_KEPT = 50
SIGNATURE_TOLERANCE_SECONDS = 300


@dataclass
class DemoIntegrator:
    """The settings page's configuration, and the events its receiver accepted."""

    linksync_url: str  # the LinkSync web app: its API and the widget's script
    api_key: str | None  # the integrator's LinkSync API key (server-side only)
    webhook_secret: str | None  # INTEGRATOR_WEBHOOK_SECRET: verifies the events received
    account_id: str = "demo-account"
    events: collections.deque[dict[str, Any]] = field(
        default_factory=lambda: collections.deque(maxlen=EVENTS_KEPT)
    )
    _seen: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def receive(self, event: dict[str, Any]) -> bool:
        """Keep a verified event (newest first); False for a repeat (delivery is at least once)."""
        with self._lock:
            uid = str(event.get("id"))
            if uid in self._seen:
                return False
            self._seen.add(uid)
            self.events.appendleft({**event, "received_at": time.time()})
            return True


def signature_valid(
    secret: str,
    header: str,
    body: bytes,
    now: float,
    tolerance: float = SIGNATURE_TOLERANCE_SECONDS,
) -> bool:
    """`t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">`, within the tolerance."""
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        parts.setdefault(key, []).append(value)
    try:
        stamp = int(parts.get("t", [""])[0])
    except ValueError:
        return False
    if abs(now - stamp) > tolerance:
        return False
    signed = f"{stamp}.".encode() + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, given) for given in parts.get("v1", []))


PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Settings · Acme Scheduling</title>
  <link rel="stylesheet" href="/_demo/settings.css">
  <script src="{widget}" defer></script>
  <script src="/_demo/settings.js" defer></script>
</head>
<body>
  <header><strong>Acme Scheduling</strong> <span>Settings &rsaquo; Integrations</span></header>
  <main id="settings" data-account-id="{account}">
    <h1>Close CRM</h1>
    <p>Show your booking pages in Close as scheduling links (account <code>{account}</code>).</p>
    <button id="connect-close" type="button">Connect to Close</button>
    <p id="result" role="status"></p>
    <h2>Events from LinkSync</h2>
    <p class="muted">Received at <code>POST /_demo/events</code>, signature verified.</p>
    <table><thead><tr><th>type</th><th>account</th><th>id</th></tr></thead>
    <tbody id="events"></tbody></table>
  </main>
</body>
</html>
"""

SCRIPT = """// The integrator's settings page: connect through the LinkSync widget, list the events.
(function () {
  "use strict";
  var button = document.getElementById("connect-close");
  var result = document.getElementById("result");
  var words = { connected: "Connected", declined: "Not connected: access was declined",
                error: "Not connected: something went wrong", closed: "Not connected: the window was closed" };

  button.addEventListener("click", function () {
    button.disabled = true;
    result.textContent = "Connecting\\u2026";
    fetch("/_demo/connect-session", { method: "POST" })
      .then(function (r) { if (!r.ok) { throw new Error("connect session: " + r.status); } return r.json(); })
      .then(function (session) { return window.LinkSync.connect({ url: session.connect_url }); })
      .then(function (outcome) {
        result.textContent = (words[outcome.status] || outcome.status) +
          (outcome.account_id ? " (account " + outcome.account_id + ")" : "");
        result.setAttribute("data-status", outcome.status);
      })
      .catch(function (e) { result.textContent = String(e); result.setAttribute("data-status", "failed"); })
      .finally(function () { button.disabled = false; });
  });

  var tbody = document.getElementById("events");
  function poll() {
    fetch("/_demo/events", { headers: { Accept: "application/json" } })
      .then(function (r) { return r.json(); })
      .then(function (body) {
        tbody.textContent = "";
        body.data.forEach(function (event) {
          var row = document.createElement("tr");
          [event.type, event.account_id, event.id].forEach(function (text) {
            var cell = document.createElement("td");
            cell.textContent = text;
            row.appendChild(cell);
          });
          row.className = "event";
          tbody.appendChild(row);
        });
      })
      .catch(function () { /* keep polling */ })
      .finally(function () { window.setTimeout(poll, 1000); });
  }
  poll();
})();
"""

STYLE = """body{font:15px system-ui,sans-serif;margin:0;color:#222}
header{background:#3b2d83;color:#fff;padding:12px 24px}header span{opacity:.8;margin-left:12px}
main{max-width:760px;margin:24px auto;padding:0 24px}
button{background:#3b2d83;color:#fff;border:0;border-radius:6px;padding:10px 18px;font-size:15px}
button:disabled{opacity:.5}#result{font-weight:600}.muted{color:#666}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:6px;text-align:left}
"""


def register_integrator(app: Flask, integrator: DemoIntegrator) -> None:
    """Add the settings page, its connect-session call and the event receiver to `app`."""
    http = requests.Session()

    def linksync_origin() -> str:
        return integrator.linksync_url.rstrip("/")

    @app.get("/settings")
    def settings_page() -> Response:
        page = PAGE.format(
            widget=escape(f"{linksync_origin()}/static/connect.js"),
            account=escape(integrator.account_id),
        )
        response = Response(page, mimetype="text/html")
        response.headers["Content-Security-Policy"] = (
            f"default-src 'self'; script-src 'self' {linksync_origin()}; style-src 'self'; "
            "frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
        )
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/_demo/settings.js")
    def settings_script() -> Response:
        return Response(SCRIPT, mimetype="text/javascript")

    @app.get("/_demo/settings.css")
    def settings_style() -> Response:
        return Response(STYLE, mimetype="text/css")

    @app.post("/_demo/connect-session")
    def connect_session() -> Any:
        """What the integrator's backend does: ask LinkSync for a connect link, server-side."""
        if not integrator.api_key:
            return jsonify(error="the demo has no LinkSync API key (API_KEYS)"), 503
        try:
            answer = http.post(
                f"{linksync_origin()}/api/v1/connect-sessions",
                json={
                    "account_id": integrator.account_id,
                    "return_url": request.url_root + "settings",
                },
                headers={"Authorization": f"Bearer {integrator.api_key}"},
                timeout=10,
            )
        except requests.RequestException as exc:
            return jsonify(error=f"LinkSync is not reachable: {type(exc).__name__}"), 502
        if answer.status_code != 201:
            return jsonify(
                error=f"LinkSync answered {answer.status_code}", detail=answer.text[:500]
            ), 502
        return jsonify(connect_url=answer.json()["connect_url"])

    @app.post("/_demo/events")
    def receive_event() -> Any:
        body = request.get_data(cache=False)
        header = request.headers.get("X-LinkSync-Signature", "")
        if not integrator.webhook_secret or not signature_valid(
            integrator.webhook_secret, header, body, time.time()
        ):
            return jsonify(error="bad or missing X-LinkSync-Signature"), 401
        try:
            event = json.loads(body)
        except ValueError:
            return jsonify(error="the body is not JSON"), 400
        if not isinstance(event, dict) or not isinstance(event.get("id"), str):
            return jsonify(error="expected an event object with an id"), 400
        integrator.receive(event)
        return jsonify(ok=True)

    @app.get("/_demo/events")
    def list_events() -> Response:
        with integrator._lock:
            return jsonify(data=list(integrator.events))
