"""Run the sandbox: in a thread (tests, benchmarks) or in the foreground (`linksync sandbox`)."""

from __future__ import annotations

import os

from service.infra.background_server import BackgroundServer, serve_forever
from service.sandbox.app import create_sandbox_app
from service.sandbox.state import SandboxConfig, SandboxState


class SandboxServer(BackgroundServer):
    def __init__(
        self,
        state: SandboxState | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        state_path: str | os.PathLike[str] | None = None,
    ) -> None:
        """`state_path` (only without a `state`): remember the world in that JSON file."""
        if state is not None and state_path is not None:
            raise ValueError("give a state or a state_path, not both")
        self.state = state or SandboxState(state_path=state_path)
        super().__init__(create_sandbox_app(self.state), host, port)


def run_sandbox(
    host: str,
    port: int,
    config: SandboxConfig | None = None,
    state_path: str | os.PathLike[str] | None = None,
) -> None:
    """Serve in the foreground; with `state_path`, a restart remembers users, grants, links."""
    serve_forever(create_sandbox_app(SandboxState(config, state_path=state_path)), host, port)
