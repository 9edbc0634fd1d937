"""How the console shows times, durations and page links (Jinja helpers)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from flask import request, url_for

from service.infra.db import utcnow
from service.infra.models import SyncRun


def _ago(value: datetime | None, now: datetime | None = None) -> str:
    if value is None:
        return "never"
    seconds = int(((now or utcnow()) - value).total_seconds())
    future = seconds < 0
    seconds = abs(seconds)
    if seconds < 45:
        text = f"{seconds} s"
    elif seconds < 45 * 60:
        text = f"{round(seconds / 60)} min"
    elif seconds < 36 * 3600:
        text = f"{round(seconds / 3600)} h"
    else:
        text = f"{round(seconds / 86400)} d"
    return f"in {text}" if future else f"{text} ago"


def _timestamp(value: datetime | str | None) -> str:
    """The console's one time format, `YYYY-MM-DD HH:MM:SS UTC` (admin.js writes the same),
    for a datetime or an ISO 8601 string as the JSON read side gives them."""
    if not value:
        return ""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:  # SQLite hands back naive values; they are UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(run: SyncRun) -> str:
    if run.started_at is None:
        return ""
    seconds = ((run.finished_at or utcnow()) - run.started_at).total_seconds()
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _page_url(param: str, page: int) -> str:
    """This page's URL with another page number for `param` (the filters are kept)."""
    values: dict[str, Any] = {**(request.view_args or {}), **request.args.to_dict()}
    values[param] = page
    return url_for(cast(str, request.endpoint), **values)


TEMPLATE_HELPERS = {
    "ago": _ago,
    "timestamp": _timestamp,
    "duration": _duration,
    "page_url": _page_url,
}
