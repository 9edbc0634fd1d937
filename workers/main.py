"""The worker and beat entry point: `celery -A workers.main worker` / `celery -A workers.main beat`.

The process's composition root: settings → Services (with an enqueue that sends through this
Celery app) → Celery with the beat table and the tasks of workers.tasks, plus a bootstep that keeps this
worker's heartbeat fresh (read by /readyz and `linksync doctor`). No Flask app: no task
needs one.
"""

from __future__ import annotations

from typing import Any

from celery import bootsteps

from service.infra.heartbeats import HeartbeatThread
from service.infra.logs import configure_logging
from service.jobs import enqueue_with, make_celery, wake_events_with
from service.services import Services
from service.settings import load_settings_or_exit
from workers import tasks
from workers.schedule import beat_schedule

settings = load_settings_or_exit()
configure_logging(settings.LOG_LEVEL, settings.LOG_FORMAT)

app = make_celery(settings, task_cls="workers.tasks:ServiceTask")
app.conf.beat_schedule = beat_schedule(settings)
services = Services(settings, enqueue=enqueue_with(app), wake_events=wake_events_with(app))
tasks.ServiceTask.bind_services(services)
tasks.register(app)


class WorkerHeartbeat(bootsteps.StartStopStep):
    """Refreshes linksync:worker-heartbeat:<hostname> while the worker runs, from a thread of
    its own (independent of the broker connection, so a broker outage does not stop it)."""

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.thread: HeartbeatThread | None = None

    def start(self, parent: Any) -> None:
        self.thread = HeartbeatThread(services.coordinator, parent.hostname)
        self.thread.start()

    def stop(self, parent: Any) -> None:
        if self.thread is not None:
            self.thread.stop()


app.steps["worker"].add(WorkerHeartbeat)
