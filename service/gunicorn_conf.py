"""gunicorn settings: `gunicorn -c python:service.gunicorn_conf service.wsgi:app`."""

from __future__ import annotations

import gc
import os
import re
from typing import Any

from gunicorn.glogging import Logger
from prometheus_client import multiprocess

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:5000")
workers = int(os.environ.get("GUNICORN_WORKERS", "4"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
worker_class = "gthread"
accesslog = "-"
timeout = 30
graceful_timeout = 20
keepalive = 5
logger_class = "service.gunicorn_conf.RedactingLogger"
# Each worker's heartbeat is an fchmod of a temporary file on every loop turn: on a disk
# filesystem it waits for the journal whenever the machine writes back (PostgreSQL's WAL right
# after a burst of webhooks), and the worker stalls with it. In memory it never waits.
# gunicorn makes the file with mkstemp (exclusive, private) and unlinks it at once.
SHM = "/dev/shm"  # noqa: S108
worker_tmp_dir = os.environ.get("GUNICORN_WORKER_TMP_DIR", SHM if os.path.isdir(SHM) else None)

# Bearer credentials that travel in URLs: connect and manage tokens in the path, the OAuth code
# and state in the callback's query. The access log must not keep them.
SECRET_PATH = re.compile(r"^(/connect/|/manage/|/api/v1/connect-sessions/)[^/?]+")
SECRET_QUERY_PATHS = ("/oauth/close/callback",)
SECRET_PARAM = re.compile(r"(?i)(^|&)(code|state|token)=[^&]*")


def redact_path(path: str) -> str:
    return SECRET_PATH.sub(r"\1***", path)


def redact_query(path: str, query: str) -> str:
    if not query:
        return query
    if path.startswith(SECRET_QUERY_PATHS):
        return "***"
    return SECRET_PARAM.sub(r"\1\2=***", query)


def redact_uri(uri: str) -> str:
    path, sep, query = uri.partition("?")
    return redact_path(path) + (sep + redact_query(path, query) if sep else "")


class RedactingLogger(Logger):
    """gunicorn's logger, with tokens and OAuth codes masked in every access-log atom (the
    request line, path, query, referer and the raw environ values)."""

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> Any:
        clean = dict(environ)
        path = str(environ.get("PATH_INFO") or "")
        clean["PATH_INFO"] = redact_path(path)
        clean["QUERY_STRING"] = redact_query(path, str(environ.get("QUERY_STRING") or ""))
        clean["RAW_URI"] = redact_uri(str(environ.get("RAW_URI") or ""))
        if "HTTP_REFERER" in environ:
            referer = str(environ["HTTP_REFERER"])
            scheme, sep, rest = referer.partition("://")
            host, slash, tail = rest.partition("/")
            clean["HTTP_REFERER"] = (
                scheme + sep + host + slash + redact_uri("/" + tail)[1:] if sep else "***"
            )
        return super().atoms(resp, req, clean, request_time)


def child_exit(_server: object, worker: object) -> None:
    # Drop a dead worker's live gauges from the multiprocess metrics directory.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined]


def post_worker_init(_worker: object) -> None:
    # The app and its imports are loaded: move them out of the collector's way, so a full
    # collection walks only what requests allocate (it walked the whole app before: ~100 ms
    # pauses, the coverage endpoint's p99 in the one_machine benchmark).
    gc.freeze()
