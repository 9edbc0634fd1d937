"""The demo source as a server: in a thread (tests, benchmarks) or in the foreground (CLI)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from types import TracebackType

from werkzeug.serving import make_server

from service.sources.demo import DemoFaults, DemoSourceStore, Stats, create_demo_source_app


class DemoSourceServer:
    def __init__(
        self,
        store: DemoSourceStore | None = None,
        token: str = "demo-source-token",  # noqa: S107 - the demo's public token
        host: str = "127.0.0.1",
        port: int = 0,
        page_size: int = 100,
    ) -> None:
        self.store = store or DemoSourceStore(None, auto_create=False)
        self.faults = DemoFaults()
        self.stats = Stats()
        app = create_demo_source_app(self.store, token, page_size, self.faults, self.stats)
        self._server = make_server(host, port, app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self._server.host}:{self._server.port}"

    def start(self) -> DemoSourceServer:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> DemoSourceServer:
        return self.start()

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stop()


def run_demo_source(host: str, port: int, path: Path, token: str) -> None:
    store = DemoSourceStore(path, auto_create=True)
    app = create_demo_source_app(store, token)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    make_server(host, port, app, threaded=True).serve_forever()
