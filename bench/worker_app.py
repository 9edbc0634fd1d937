"""The worker app with the bench's broker overrides: `celery -A bench.worker_app worker`.

The broker's visibility timeout (how long Redis keeps a delivered, unacknowledged task before
handing it to another worker) is BROKER_VISIBILITY_TIMEOUT_SECONDS; a benchmark that needs a
run to outlast it sets BENCH_VISIBILITY_TIMEOUT here, and also makes kombu look for overdue
tasks every second (kombu's restore interval is not a setting of ours).
"""

from __future__ import annotations

import os
from typing import Any

import redis
from celery.signals import task_prerun

from bench.stack import SYNC_DELIVERIES_KEY
from service.jobs import TASK_SYNC
from workers.main import app, settings

_timeout = os.environ.get("BENCH_VISIBILITY_TIMEOUT")
if _timeout:
    app.conf.broker_transport_options = {
        **(app.conf.broker_transport_options or {}),
        "visibility_timeout": float(_timeout),
        # kombu scans for overdue unacknowledged tasks every interval x throttle seconds
        # (10 x 10 by default); scan every second so the redelivery happens on time.
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
    }

__all__ = ["app"]


# Every sync task a worker starts (an original, a redelivered copy, a busy retry) is counted
# in the broker's Redis, so a benchmark can show that a redelivery happened and what it did.


@task_prerun.connect
def _count_sync_starts(task: Any = None, **_: Any) -> None:
    if task is not None and task.name == TASK_SYNC and settings.REDIS_URL:
        redis.Redis.from_url(settings.REDIS_URL).incr(SYNC_DELIVERIES_KEY)
