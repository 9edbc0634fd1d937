"""Celery beat's table: the scheduler tick and the housekeeping."""

from __future__ import annotations

from typing import Any

from service.jobs import EVENTS_QUEUE, TASK_CLEANUP, TASK_DELIVER_EVENTS, TASK_TICK
from service.settings import Settings


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    return {
        "schedule-due-syncs": {
            "task": TASK_TICK,
            "schedule": float(settings.SCHEDULER_TICK_SECONDS),
            "options": {"expires": float(settings.SCHEDULER_TICK_SECONDS)},
        },
        "cleanup": {"task": TASK_CLEANUP, "schedule": 3600.0},
        # The sweep: events whose wake-up was lost (crash, broker outage) or whose retry is due.
        "deliver-events": {
            "task": TASK_DELIVER_EVENTS,
            "schedule": float(settings.SCHEDULER_TICK_SECONDS),
            "options": {"expires": float(settings.SCHEDULER_TICK_SECONDS), "queue": EVENTS_QUEUE},
        },
    }
