"""A real HTTP receiver for the integrator's webhook, in a thread: it records every request
and answers what the test scripts (a status per call, or a delay)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from werkzeug.wrappers import Request, Response

from service.infra.background_server import BackgroundServer


@dataclass
class Received:
    body: bytes
    headers: dict[str, str]
    status: int

    @property
    def json(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.body)
        return value


@dataclass
class Receiver:
    """`script` is consumed one status per request; when empty, `default` answers."""

    script: list[int] = field(default_factory=list)
    default: int = 200
    delay: float = 0.0
    received: list[Received] = field(default_factory=list)
    arrived: int = 0  # requests that started (answered or not)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        body = request.get_data()
        with self.lock:
            self.arrived += 1
            status = self.script.pop(0) if self.script else self.default
        if self.delay:
            time.sleep(self.delay)
        with self.lock:
            self.received.append(Received(body, dict(request.headers), status))
        return Response("{}", status=status, mimetype="application/json")(environ, start_response)

    def delivered(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r.json for r in self.received if 200 <= r.status < 300]


def serve(receiver: Receiver) -> BackgroundServer:
    return BackgroundServer(receiver).start()
