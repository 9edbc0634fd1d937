"""Run the sandbox: in a thread (tests, benchmarks) or in the foreground (`linksync sandbox`)."""

from __future__ import annotations

import logging
import threading
from types import TracebackType

from werkzeug.serving import make_server

from service.sandbox.app import create_sandbox_app
from service.sandbox.state import SandboxConfig, SandboxState


class SandboxServer:
    def __init__(
        self, state: SandboxState | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.state = state or SandboxState()
        self._server = make_server(host, port, create_sandbox_app(self.state), threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self._server.host}:{self._server.port}"

    def start(self) -> SandboxServer:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stop()


def run_sandbox(host: str, port: int, config: SandboxConfig | None = None) -> None:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    app = create_sandbox_app(SandboxState(config))
    make_server(host, port, app, threaded=True).serve_forever()
