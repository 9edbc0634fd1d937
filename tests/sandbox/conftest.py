"""A Close sandbox of this package's own: a real HTTP server in a thread, seeded random, a clock
that tests can move forward; reset around every test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from service.sandbox.server import SandboxServer
from service.sandbox.state import SandboxState
from tests.sandbox.harness import Sandbox, ShiftedClock


@pytest.fixture(scope="package")
def sandbox_process() -> Iterator[tuple[SandboxServer, ShiftedClock]]:
    clock = ShiftedClock()
    with SandboxServer(SandboxState(seed=1234, clock=clock)) as server:
        yield server, clock


@pytest.fixture
def sandbox(sandbox_process: tuple[SandboxServer, ShiftedClock]) -> Iterator[Sandbox]:
    """The sandbox reset to its seeded world, with a fresh keep-alive HTTP session."""
    server, clock = sandbox_process
    server.state.reset()
    with requests.Session() as http:
        yield Sandbox(server, clock, http)
    clock.thaw()
    server.state.reset()
