"""Run the sandbox: in a thread (tests, benchmarks) or in the foreground (`linksync sandbox`)."""

from __future__ import annotations

from service.infra.background_server import BackgroundServer, serve_forever
from service.sandbox.app import create_sandbox_app
from service.sandbox.state import SandboxConfig, SandboxState


class SandboxServer(BackgroundServer):
    def __init__(
        self, state: SandboxState | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.state = state or SandboxState()
        super().__init__(create_sandbox_app(self.state), host, port)


def run_sandbox(host: str, port: int, config: SandboxConfig | None = None) -> None:
    serve_forever(create_sandbox_app(SandboxState(config)), host, port)
