"""Event type (source) → THIRD_PARTY scheduling-link fields (Close), validated locally.

Close does not publish field limits, so we pick conservative ones and reject on our side what
Close would reject or what is unsafe, as a per-link error; the other links still sync.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

MAX_SOURCE_ID = 255
MAX_NAME = 255
MAX_URL = 2048
MAX_DESCRIPTION = 5000
MAX_SOURCE_TYPE = 100
MAX_DURATION_MINUTES = 1440


EDITABLE_FIELDS = ("source_id", "name", "url", "description", "source_type", "duration_in_minutes")


@dataclass(frozen=True)
class DesiredLink:
    source_id: str
    # Exactly the body of POST /scheduling_link/integration/: every editable key, None (JSON
    # null) when empty, so clearing a field in the source clears it in Close too.
    fields: dict[str, Any]
    content_hash: str


@dataclass(frozen=True)
class InvalidLink:
    source_id: str
    name: str | None
    error: str


def content_hash(fields: dict[str, Any]) -> str:
    """Of the non-empty fields only: a cleared field still changes the hash (its key goes),
    and the hashes of links pushed before empty fields were sent as null stay valid (no mass
    rewrite after an upgrade)."""
    present = {k: v for k, v in fields.items() if v is not None}
    canonical = json.dumps(present, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _text(value: object, field: str, limit: int, *, required: bool) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise ValueError(f"{field} is missing")
        return None
    if not isinstance(value, str):
        raise ValueError(f"{field} must be a string")
    if len(value) > limit:
        raise ValueError(f"{field} is longer than {limit} characters")
    if any(ord(ch) < 32 and ch not in "\n\r\t" for ch in value):
        raise ValueError(f"{field} contains control characters")
    return value.strip() if field != "description" else value


def _url(value: object) -> str:
    url = _text(value, "url", MAX_URL, required=True)
    assert url is not None
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError("url must be an absolute http(s) URL")
    if any(ch.isspace() for ch in url):
        raise ValueError("url must not contain spaces")
    return url


def _duration(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise ValueError("duration_minutes must be a whole number")
    minutes = int(value)
    if not 1 <= minutes <= MAX_DURATION_MINUTES:
        raise ValueError(f"duration_minutes must be between 1 and {MAX_DURATION_MINUTES}")
    return minutes


def source_id_of(item: object) -> str | None:
    """The event type's id as a string, or None when it has no usable id."""
    if not isinstance(item, dict):
        return None
    raw = item.get("id")
    if isinstance(raw, bool) or not isinstance(raw, str | int) or raw == "":
        return None
    value = str(raw)
    return value if len(value) <= MAX_SOURCE_ID else None


def is_active(item: dict[str, Any]) -> bool:
    """Inactive event types count as deleted; a missing flag means active."""
    return item.get("active", True) is not False


def map_event_type(item: dict[str, Any]) -> DesiredLink | InvalidLink:
    source_id = source_id_of(item)
    if source_id is None:
        raise ValueError("event type without a usable id")  # caller records it without a row
    name = item.get("name") if isinstance(item.get("name"), str) else None
    try:
        if "/" in source_id:
            # Close's DELETE /scheduling_link/integration/{source_id}/ could never reach it.
            raise ValueError("source_id must not contain '/'")
        fields: dict[str, Any] = {
            "source_id": source_id,
            "name": _text(item.get("name"), "name", MAX_NAME, required=True),
            "url": _url(item.get("url")),
            "description": _text(
                item.get("description"), "description", MAX_DESCRIPTION, required=False
            ),
            "source_type": _text(item.get("kind"), "kind", MAX_SOURCE_TYPE, required=False),
            "duration_in_minutes": _duration(item.get("duration_minutes")),
        }
    except ValueError as exc:
        return InvalidLink(source_id=source_id, name=name, error=str(exc))
    return DesiredLink(source_id=source_id, fields=fields, content_hash=content_hash(fields))
