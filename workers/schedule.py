"""Celery beat's table: the scheduler tick and the housekeeping."""

from __future__ import annotations

from typing import Any

from service.jobs import TASK_CLEANUP, TASK_TICK
from service.settings import Settings


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    return {
        "schedule-due-syncs": {
            "task": TASK_TICK,
            "schedule": float(settings.SCHEDULER_TICK_SECONDS),
            "options": {"expires": float(settings.SCHEDULER_TICK_SECONDS)},
        },
        "cleanup": {"task": TASK_CLEANUP, "schedule": 3600.0},
    }
