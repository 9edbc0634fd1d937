"""A real worker delivers events woken after commit; killed mid-delivery (SIGKILL while the
receiver holds the request), nothing is lost: a new worker delivers it (at least once). A slow
receiver does not slow the syncs the same worker runs."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from service.infra.models import DeliveryState, Event
from service.jobs import make_celery, send_deliver_events, wake_events_with
from service.services import Services
from service.settings import Settings
from tests.conftest import RecordingEnqueue, forget_connections, new_account, wait_until
from tests.events.conftest import INTEGRATOR_SECRET
from tests.events.receiver import Receiver
from tests.events.test_delivery import emit
from tests.helpers import connect_directly


def fresh_delivery_settings(
    make_settings: Callable[..., Settings], pg_url: str, redis_url: str, url: str
) -> Settings:
    """PostgreSQL + Redis settings delivering to `url`, starting as a fresh deployment would:
    no other test's events queued before ours, and no deliverer lock or flag left in this
    Redis database by a worker an earlier test killed (it would hold them for its TTL)."""
    import redis as redis_lib

    from service.infra import locks

    forget_connections(pg_url)
    redis_lib.Redis.from_url(redis_url).delete(
        *(
            "linksync:" + key
            for key in (
                locks.EVENTS_DELIVERY_LOCK,
                locks.EVENTS_DIRTY_FLAG,
                locks.EVENTS_WAKE_SCHEDULED_FLAG,
            )
        )
    )
    return make_settings(
        DATABASE_URL=pg_url,
        REDIS_URL=redis_url,
        INTEGRATOR_WEBHOOK_URL=url,
        INTEGRATOR_WEBHOOK_SECRET=INTEGRATOR_SECRET,
        INTEGRATOR_WEBHOOK_TIMEOUT_SECONDS=30,
        SYNC_LOCK_TTL_SECONDS=5,
    )


def test_killed_mid_delivery_the_event_is_delivered_after_restart(
    make_settings: Callable[..., Settings],
    pg_url: str,
    redis_url: str,
    sandbox: Any,
    receiver: tuple[Receiver, str],
    start_worker: Callable[..., Any],
) -> None:
    recv, url = receiver
    settings = fresh_delivery_settings(make_settings, pg_url, redis_url, url)
    celery = make_celery(settings)
    svc = Services(settings, enqueue=RecordingEnqueue(), wake_events=wake_events_with(celery))
    try:
        cid = connect_directly(svc, sandbox, new_account())
        recv.delay = 20  # the worker will be killed while it waits for this answer
        worker = start_worker(settings)
        (uid,) = emit(svc, cid, 1)  # the commit wakes the worker
        wait_until(lambda: recv.arrived >= 1, timeout=30)
        time.sleep(0.5)
        worker.kill()
        recv.delay = 0
        start_worker(settings)
        swept = [0.0]

        def delivered_by_the_new_worker() -> bool:
            with svc.db.session() as session:
                event = session.scalar(select(Event).where(Event.uid == uid))
                if event is not None and event.delivery_state == DeliveryState.DELIVERED:
                    return True
            # What the beat's sweep sends every tick (here every 2 s). One sweep is not
            # always enough: while the dead worker's lock lives (its TTL), a sweep finds the
            # deliverer busy, and the delayed wake-up the dead worker had scheduled for that
            # case died with it (its "wake scheduled" flag stops another for a TTL).
            if time.monotonic() - swept[0] >= 2:
                send_deliver_events(celery)
                swept[0] = time.monotonic()
            return False

        wait_until(delivered_by_the_new_worker, timeout=60)
        assert recv.arrived >= 2  # posted again: at least once
    finally:
        svc.close()


def test_a_slow_integrator_endpoint_does_not_slow_syncs(
    make_settings: Callable[..., Settings],
    pg_url: str,
    redis_url: str,
    sandbox: Any,
    source: Any,
    receiver: tuple[Receiver, str],
    start_worker: Callable[..., Any],
) -> None:
    """Delivery is its own task on its own queue, and only one deliverer runs at a time: while
    the integrator's endpoint takes 15 s to answer, a sync in the same worker (2 threads)
    still finishes at its own speed."""
    from service.infra.models import RunStatus, SyncRun
    from service.jobs import send_sync
    from tests.helpers import event_type

    recv, url = receiver
    settings = fresh_delivery_settings(make_settings, pg_url, redis_url, url)
    celery = make_celery(settings)
    svc = Services(settings, enqueue=RecordingEnqueue(), wake_events=wake_events_with(celery))
    try:
        account = new_account()
        source.store.put_all(account, [event_type(n, account) for n in range(1, 11)])
        cid = connect_directly(svc, sandbox, account)
        recv.delay = 15
        start_worker(settings)
        emit(svc, cid, 3)  # the commit wakes the deliverer, which waits on the endpoint
        wait_until(lambda: recv.arrived >= 1, timeout=30)
        started = time.monotonic()
        send_sync(celery, cid, "manual")

        def synced() -> SyncRun | None:
            with svc.db.session() as session:
                return session.scalar(
                    select(SyncRun).where(
                        SyncRun.connection_id == cid, SyncRun.status == RunStatus.SUCCEEDED
                    )
                )

        run = wait_until(synced, timeout=30)
        took = time.monotonic() - started
        assert run.created == 10
        assert took < 10, took  # the endpoint still holds its first request for 15 s
        assert recv.arrived == 1  # in order: nothing else was posted meanwhile
    finally:
        recv.delay = 0
        svc.close()
