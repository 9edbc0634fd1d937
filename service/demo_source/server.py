"""The demo source as a server: in a thread (tests, benchmarks) or in the foreground (CLI)."""

from __future__ import annotations

from pathlib import Path

from service.demo_source.app import DemoFaults, DemoSourceStore, Stats, create_demo_source_app
from service.demo_source.integrator import DemoIntegrator
from service.infra.background_server import BackgroundServer, serve_forever


class DemoSourceServer(BackgroundServer):
    def __init__(
        self,
        store: DemoSourceStore | None = None,
        token: str = "demo-source-token",  # noqa: S107 - the demo's public token
        host: str = "127.0.0.1",
        port: int = 0,
        page_size: int = 100,
        integrator: DemoIntegrator | None = None,
    ) -> None:
        self.store = store or DemoSourceStore(None, auto_create=False)
        self.faults = DemoFaults()
        self.stats = Stats()
        self.integrator = integrator
        app = create_demo_source_app(
            self.store, token, page_size, self.faults, self.stats, integrator
        )
        super().__init__(app, host, port)


def run_demo_source(
    host: str, port: int, path: Path, token: str, integrator: DemoIntegrator | None = None
) -> None:
    store = DemoSourceStore(path, auto_create=True)
    serve_forever(create_demo_source_app(store, token, integrator=integrator), host, port)
