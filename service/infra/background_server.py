"""A WSGI app served on a loopback port from a daemon thread (the sandbox and the demo source,
for tests, benchmarks and `linksync dev`)."""

from __future__ import annotations

import logging
import threading
from types import TracebackType
from typing import Any, Self

from werkzeug.serving import make_server


class BackgroundServer:
    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = make_server(host, port, app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self._server.host}:{self._server.port}"

    def start(self) -> Self:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stop()


def serve_forever(app: Any, host: str, port: int) -> None:
    """Serve in the foreground (the `linksync sandbox` / `linksync demo-source` commands)."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    make_server(host, port, app, threaded=True).serve_forever()
