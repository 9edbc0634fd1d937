"""gunicorn settings: `gunicorn -c python:service.gunicorn_conf service.wsgi:app`."""

from __future__ import annotations

import os

from prometheus_client import multiprocess

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:5000")
workers = int(os.environ.get("GUNICORN_WORKERS", "4"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
worker_class = "gthread"
accesslog = "-"
timeout = 30
graceful_timeout = 20
keepalive = 5


def child_exit(_server: object, worker: object) -> None:
    # Drop a dead worker's live gauges from the multiprocess metrics directory.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined]
