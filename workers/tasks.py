"""Thin Celery tasks: load by id, call one service, let the service own the transactions.

The functions are module-level; `register` turns them into tasks of one Celery app. Each runs
on ServiceTask, which holds the process's Services (bound once by workers.main).
"""

from __future__ import annotations

import logging
import time
from typing import ClassVar

import redis
from celery import Celery, Task
from sqlalchemy import text
from sqlalchemy.exc import DisconnectionError, OperationalError

from service.connections.housekeeping import clean_up
from service.events.delivery import deliver_due
from service.infra import locks, logs
from service.infra.db import utcnow
from service.infra.locks import busy_retry_countdown
from service.jobs import (
    TASK_CLEANUP,
    TASK_DELIVER_EVENTS,
    TASK_SYNC,
    TASK_TICK,
    clamp_countdown,
    send_deliver_events,
    send_sync,
)
from service.services import Services
from service.sync.runner import SyncBusy, is_dirty, mark_coalesced, run_sync
from service.sync.scheduler import due_connections, pending_requests

log = logging.getLogger(__name__)

BUSY_RETRIES = 20
# The database or Redis went away during the task: retry after this long (the run that
# crashed was marked failed, or will be by the next lock holder, and its request restored).
OUTAGE_RETRY_SECONDS = 5.0
OUTAGE_WAIT_SECONDS = 300.0
OUTAGES = (OperationalError, DisconnectionError, redis.ConnectionError, redis.TimeoutError)


def wait_for_backends(svc: Services, timeout: float, poll: float = 1.0) -> bool:
    """Block until Redis (when configured) and the database answer, or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if svc.redis is not None:
                svc.redis.ping()
            with svc.db.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll)


class ServiceTask(Task):
    """Base of every task: the process's Services, built once per worker process."""

    _services: ClassVar[Services | None] = None

    @classmethod
    def bind_services(cls, services: Services) -> None:
        cls._services = services

    @property
    def services(self) -> Services:
        if self._services is None:
            raise RuntimeError("ServiceTask.bind_services was not called (see workers.main)")
        return self._services


def sync_connection(
    task: ServiceTask,
    connection_id: int,
    trigger: str,
    run_id: int | None = None,
    reconcile: bool = False,
    skip_if_running: bool = False,
    follow_up: bool = False,
) -> None:
    svc = task.services
    logs.bind(task_id=task.request.id, connection_id=connection_id, trigger=trigger)
    try:
        if follow_up and not is_dirty(svc, connection_id):
            return  # the lock holder already ran the follow-up this retry was waiting for
        run_sync(
            svc,
            connection_id,
            trigger=trigger,
            run_id=run_id,
            reconcile=reconcile or trigger == "reconcile",
            skip_if_running=skip_if_running,
        )
    except SyncBusy:
        if skip_if_running:
            return
        if run_id is not None:
            mark_coalesced(svc, run_id, "merged into the run already in progress")
        # The holder will run once more for us; if it dies first, this retry does it.
        raise task.retry(
            countdown=clamp_countdown(task.app, busy_retry_countdown(svc.settings)),
            args=[connection_id, trigger, None],
            kwargs={"reconcile": reconcile, "follow_up": True},
        ) from None
    except OUTAGES as exc:
        # The run put its request back in the database (when the database was there), so the
        # scheduler tick re-sends it. A retry is only a faster path: with the broker down it
        # cannot be published, and raising then would make Celery reject a message over a
        # dead connection, which can leave the consumer stuck; so end quietly instead.
        log.warning("sync interrupted by an outage; retrying", extra={"error": type(exc).__name__})
        # Hold this task until the broker and the database answer again: Celery acks (or
        # rejects) the message when the task returns, and an ack that fails over a dead
        # connection leaves the message counted as reserved for ever, so a worker whose every
        # thread did that stops consuming (prefetch exhausted) even after the broker is back.
        wait_for_backends(svc, OUTAGE_WAIT_SECONDS)
        try:
            task.retry(
                countdown=clamp_countdown(task.app, OUTAGE_RETRY_SECONDS),
                args=[connection_id, trigger, None],
                kwargs={"reconcile": reconcile, "skip_if_running": skip_if_running},
                throw=False,
            )
        except Exception as retry_exc:
            log.warning(
                "could not schedule the retry; the durable request will be re-sent",
                extra={"error": type(retry_exc).__name__},
            )
    finally:
        logs.clear()


def schedule_due_syncs(task: ServiceTask) -> int:
    # Requests whose wake-up was lost first: they were promised (202) and are already late.
    pending = pending_requests(task.services)
    for request in pending:
        send_sync(
            task.app,
            request.connection_id,
            request.trigger,
            reconcile=request.reconcile,
            skip_if_running=True,  # a run that holds the lock runs once more for it
        )
    if pending:
        log.info("re-sent pending sync requests", extra={"count": len(pending)})
    due = due_connections(task.services)
    for item in due:
        send_sync(
            task.app,
            item.connection_id,
            "schedule",
            reconcile=item.reconcile,
            skip_if_running=True,
            countdown=item.countdown,
        )
    if due:
        log.info("scheduled syncs", extra={"count": len(due)})
    return len(due)


def cleanup(task: ServiceTask) -> None:
    clean_up(task.services)


def deliver_events(task: ServiceTask) -> None:
    """Deliver the integrator events that are due (woken after each commit that wrote some,
    and swept by the beat every tick). A retry that comes due before the next tick, or a
    deliverer found busy (perhaps dead: its lock expires), gets one delayed wake-up."""
    svc = task.services
    report = deliver_due(svc)
    if report.busy:
        countdown = locks.sync_lock_ttl(svc.settings)
    elif report.next_due is not None:
        countdown = max((report.next_due - utcnow()).total_seconds(), 0.05)
        if countdown > svc.settings.SCHEDULER_TICK_SECONDS:
            return  # the beat's sweep comes first
    else:
        return
    if svc.coordinator.set_flag(locks.EVENTS_WAKE_SCHEDULED_FLAG, countdown):
        send_deliver_events(task.app, countdown=countdown)


def register(app: Celery) -> None:
    app.task(name=TASK_SYNC, bind=True, acks_late=True, max_retries=BUSY_RETRIES)(sync_connection)
    app.task(name=TASK_TICK, bind=True)(schedule_due_syncs)
    app.task(name=TASK_CLEANUP, bind=True)(cleanup)
    app.task(name=TASK_DELIVER_EVENTS, bind=True, acks_late=True)(deliver_events)
