"""The Celery application, built from settings; tasks run inside the Flask app context.

Broker: REDIS_URL when set; otherwise kombu's SQLAlchemy transport on a SQLite file under
instance/ (the embedded default: no Redis needed). Results are not stored: runs are recorded
in our own sync_runs table.
"""

from __future__ import annotations

from celery import Celery, Task

from service.settings import Settings

TASK_SYNC = "linksync.sync_connection"
QUEUE = "celery"


def broker_url(settings: Settings) -> str:
    if settings.REDIS_URL:
        return settings.REDIS_URL
    path = (settings.INSTANCE_PATH / "broker.sqlite").resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqla+sqlite:///{path}"


def make_celery(settings: Settings, task_cls: type[Task] | str | None = None) -> Celery:
    app = Celery(
        "linksync",
        broker=broker_url(settings),
        set_as_current=False,
        task_cls=task_cls or "celery.app.task:Task",
    )
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
        worker_hijack_root_logger=False,
        timezone="UTC",
    )
    if settings.REDIS_URL:
        # A task whose worker died is redelivered after this many seconds.
        app.conf.broker_transport_options = {"visibility_timeout": 300}
    return app


def celery_enqueue(settings: Settings):
    """An Enqueue function for the web process: sends by task name, no worker code imported."""
    celery = make_celery(settings)

    def enqueue(connection_id: int, trigger: str, run_id: int | None) -> None:
        celery.send_task(TASK_SYNC, args=[connection_id, trigger, run_id])

    return enqueue
