"""Celery, and only here: the app factory, the broker URL, the task names and the enqueue
functions the rest of the service is handed (it never imports Celery or `workers/`).

Broker: REDIS_URL when set; otherwise kombu's SQLAlchemy transport on a SQLite file under
instance/ (the embedded default: no Redis needed), polled every 0.1 s. Results are not stored: runs are recorded
in our own sync_runs table.
"""

from __future__ import annotations

from collections.abc import Callable

from celery import Celery
from kombu import Queue
from kombu.transport import sqlalchemy as kombu_sqlalchemy

from service.settings import Settings

TASK_SYNC = "linksync.sync_connection"
TASK_TICK = "linksync.schedule_due_syncs"
TASK_CLEANUP = "linksync.cleanup"
TASK_DELIVER_EVENTS = "linksync.deliver_events"
# Event delivery has a queue of its own, so a slow integrator endpoint never sits in front of
# syncs; every worker consumes both unless started with -Q (e.g. a dedicated `-Q events` one).
EVENTS_QUEUE = "events"

SQLITE_BROKER_POLL_SECONDS = 0.1


class SqliteBrokerTransport(kombu_sqlalchemy.Transport):
    """kombu's SQLAlchemy transport, polled ten times a second instead of once (which alone
    made a webhook take about a second to reach Close on the embedded default). Set on the
    class because this transport hands every transport option to create_engine, which
    refuses `polling_interval`. Idle cost: one SELECT on a local file per poll, measured by
    `python -m bench.run embedded_webhook_to_close` (idle_worker_cpu_percent)."""

    polling_interval = SQLITE_BROKER_POLL_SECONDS


# enqueue(connection_id, trigger, run_id) -> None: how a web request or a task asks for a sync.
Enqueue = Callable[[int, str, int | None], None]


def broker_url(settings: Settings) -> str:
    if settings.REDIS_URL:
        return settings.REDIS_URL
    path = (settings.INSTANCE_PATH / "broker.sqlite").resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def make_celery(settings: Settings, task_cls: str | None = None) -> Celery:
    app = Celery(
        "linksync",
        broker=broker_url(settings),
        set_as_current=False,
        task_cls=task_cls or "celery.app.task:Task",
    )
    if not settings.REDIS_URL:
        # An import path is only accepted here, never in the URL (kombu refuses it there).
        app.conf.broker_transport = f"{__name__}:SqliteBrokerTransport"
    app.conf.update(
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        accept_content=["json"],
        task_time_limit=3600,
        task_soft_time_limit=3300,
        broker_connection_retry_on_startup=True,
        # Keep reconnecting through a broker outage of any length (the default gives up after
        # 100 attempts and the worker exits).
        broker_connection_retry=True,
        broker_connection_max_retries=None,
        worker_hijack_root_logger=False,
        timezone="UTC",
        task_queues=(
            Queue("celery", routing_key="celery"),
            Queue(EVENTS_QUEUE, routing_key=EVENTS_QUEUE),
        ),
        task_routes={TASK_DELIVER_EVENTS: {"queue": EVENTS_QUEUE}},
    )
    if settings.REDIS_URL:
        # A task whose worker died is redelivered after the visibility timeout; it must exceed
        # the longest task and every countdown (see service.infra.locks), or a task still
        # running, or still waiting for its ETA, is delivered again.
        app.conf.broker_transport_options = {
            "visibility_timeout": settings.BROKER_VISIBILITY_TIMEOUT_SECONDS,
            # Notice a dead broker connection within seconds, not at the next TCP timeout.
            "health_check_interval": 10,
        }
        # No remote control (pidbox): its auto-delete fanout channel fails to close while the
        # broker is down, which aborts kombu's teardown and leaves the unacked task's channel
        # with no connection ("'NoneType' object has no attribute 'hostname'", kombu #582):
        # the worker then exits. Liveness comes from our own heartbeat key instead.
        app.conf.worker_enable_remote_control = False
    return app


# celery worker flags every worker spawner uses: gossip, mingle and the event heartbeat are
# not needed (we coordinate through locks), and gossip's fanout channel is what aborts kombu's
# connection teardown during a broker outage ("'NoneType' object has no attribute
# 'hostname'", kombu #582): without it the worker reconnects instead of exiting.
WORKER_FLAGS = ("--pool=threads", "--without-gossip", "--without-mingle", "--without-heartbeat")


def clamp_countdown(celery: Celery, countdown: float | None) -> float | None:
    """A countdown (an ETA) beyond the Redis visibility timeout is redelivered again and
    again while it waits: keep every countdown below half of it."""
    if countdown is None:
        return None
    visibility = (celery.conf.broker_transport_options or {}).get("visibility_timeout")
    if visibility is None:
        return countdown
    return max(0.0, min(countdown, float(visibility) / 2))


def send_sync(
    celery: Celery,
    connection_id: int,
    trigger: str,
    run_id: int | None = None,
    *,
    reconcile: bool = False,
    skip_if_running: bool = False,
    countdown: float | None = None,
) -> None:
    """Send a sync task by name: the sender needs no worker code. The arguments' repr for the
    worker's log is given, not computed: Celery's bounded saferepr cost a fifth of a publish
    (about 0.2 of 1.2 ms), and these arguments are three scalars and two flags."""
    args = [connection_id, trigger, run_id]
    kwargs = {"reconcile": reconcile, "skip_if_running": skip_if_running}
    celery.send_task(
        TASK_SYNC,
        args=args,
        kwargs=kwargs,
        countdown=clamp_countdown(celery, countdown),
        argsrepr=repr(args),
        kwargsrepr=repr(kwargs),
    )


def enqueue_with(celery: Celery) -> Enqueue:
    def enqueue(connection_id: int, trigger: str, run_id: int | None) -> None:
        send_sync(celery, connection_id, trigger, run_id)

    return enqueue


def celery_enqueue(settings: Settings) -> Enqueue:
    """An Enqueue function for a process that only sends (the web app, the CLI, tests)."""
    return enqueue_with(make_celery(settings))


def send_deliver_events(celery: Celery, *, countdown: float | None = None) -> None:
    """Wake the event delivery (it delivers whatever is due, in order per connection)."""
    celery.send_task(TASK_DELIVER_EVENTS, countdown=countdown, queue=EVENTS_QUEUE)


def wake_events_with(celery: Celery) -> Callable[[], None]:
    def wake() -> None:
        send_deliver_events(celery)

    return wake
