from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from service.infra import migrate
from service.services import Services
from service.settings import Settings
from tests.conftest import RecordingEnqueue
from tests.events.receiver import Receiver, serve

INTEGRATOR_SECRET = "integrator-secret-for-tests"


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    recv = Receiver()
    server = serve(recv)
    yield recv, server.url + "/hooks/linksync"
    server.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def event_settings(
    request: pytest.FixtureRequest,
    make_settings: Callable[..., Settings],
    receiver: tuple[Receiver, str],
) -> Settings:
    overrides: dict[str, Any] = {
        "INTEGRATOR_WEBHOOK_URL": receiver[1],
        "INTEGRATOR_WEBHOOK_SECRET": INTEGRATOR_SECRET,
        "INTEGRATOR_WEBHOOK_BACKOFF_SECONDS": 0.05,
        "INTEGRATOR_WEBHOOK_TIMEOUT_SECONDS": 2,
    }
    if request.param == "sqlite":
        settings = make_settings(**overrides)
        migrate.upgrade(settings.database_url)
        return settings
    from tests.conftest import forget_connections

    pg_url = request.getfixturevalue("pg_url")
    forget_connections(pg_url)  # other tests' events would be delivered to this receiver too
    return make_settings(
        DATABASE_URL=pg_url,
        REDIS_URL=request.getfixturevalue("redis_url"),
        **overrides,
    )


class Wakes:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


@pytest.fixture
def wakes() -> Wakes:
    return Wakes()


@pytest.fixture
def event_services(event_settings: Settings, wakes: Wakes) -> Iterator[Services]:
    svc = Services(event_settings, enqueue=RecordingEnqueue(), wake_events=wakes)
    yield svc
    svc.close()
