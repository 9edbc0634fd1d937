"""The worker and beat entry point: `celery -A workers.main worker` / `celery -A workers.main beat`.

This module is the process's composition root, so building the app here is intended: it reads
the settings, configures logging, and registers the tasks. Tasks run inside the Flask app
context of an app built from the same settings and services.
"""

from __future__ import annotations

from celery import Task

from service.app import create_app
from service.container import Services
from service.logs import configure_logging
from service.settings import load_settings
from workers.celery_app import make_celery
from workers.schedule import beat_schedule
from workers.tasks import register_tasks

settings = load_settings()
configure_logging(settings.LOG_LEVEL, settings.LOG_FORMAT)
services = Services(settings)


class FlaskTask(Task):
    def __call__(self, *args: object, **kwargs: object) -> object:
        with flask_app.app_context():
            return self.run(*args, **kwargs)


app = make_celery(settings, task_cls=FlaskTask)
app.conf.beat_schedule = beat_schedule(settings)


def _enqueue(connection_id: int, trigger: str, run_id: int | None) -> None:
    app.send_task("linksync.sync_connection", args=[connection_id, trigger, run_id])


services.enqueue = _enqueue
flask_app = create_app(settings, services=services)
register_tasks(app, services)
