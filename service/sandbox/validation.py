"""Field validation of the sandbox's scheduling-link endpoints.

Close does not publish its limits (close-api.md, "Not confirmed anywhere public"); these are the
sandbox's, chosen to be strict enough that a client which passes them sends Close nothing absurd.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

MAX_LENGTHS = {
    "name": 255,
    "url": 2048,
    "description": 5000,
    "source_id": 255,
    "source_type": 100,
}
MAX_DURATION_MINUTES = 1440
REQUIRED = "This field is required."
_WHITESPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")


def url_problem(url: str) -> str | None:
    """Why `url` is not an absolute http(s) URL with a host, or None when it is."""
    if _WHITESPACE_OR_CONTROL.search(url):
        return "Enter a valid URL (no spaces or control characters)."
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return "Enter a valid URL."
    if parts.scheme not in ("http", "https"):
        return "Enter a valid URL starting with http:// or https://."
    if not host:
        return "Enter a valid URL with a host."
    return None


def link_errors(
    body: Mapping[str, Any],
    *,
    required: Iterable[str],
    optional: Iterable[str] = (),
    partial: bool = False,
) -> dict[str, str]:
    """Field errors of a link body. `required` fields must be present and non-blank, except in
    a `partial` update, where only a field that is present must be valid; `optional` fields may
    be absent or null. Fields in neither list are ignored, as Close ignores unknown fields."""
    required = tuple(required)
    checked = {*required, *optional}
    errors: dict[str, str] = {}
    for name in required:
        value = body.get(name)
        missing = value is None or (isinstance(value, str) and not value.strip())
        if missing and (not partial or name in body):
            errors[name] = REQUIRED
    for name, limit in MAX_LENGTHS.items():
        value = body.get(name)
        if name not in checked or value is None or name in errors:
            continue
        if not isinstance(value, str):
            errors[name] = "Must be a string."
        elif len(value) > limit:
            errors[name] = f"Ensure this field has no more than {limit} characters."
    source_id = body.get("source_id")
    if "source_id" in checked and "source_id" not in errors and "/" in str(source_id or ""):
        # DELETE /scheduling_link/integration/{source_id}/ could never reach such a link.
        errors["source_id"] = "Must not contain '/'."
    url = body.get("url")
    if "url" in checked and isinstance(url, str) and "url" not in errors:
        problem = url_problem(url)
        if problem:
            errors["url"] = problem
    duration = body.get("duration_in_minutes")
    if (
        "duration_in_minutes" in checked
        and duration is not None
        and (
            isinstance(duration, bool)
            or not isinstance(duration, int)
            or not 0 < duration <= MAX_DURATION_MINUTES
        )
    ):
        errors["duration_in_minutes"] = (
            f"Must be a positive whole number of minutes (at most {MAX_DURATION_MINUTES})."
        )
    return errors


def template_tag(name: str) -> str:
    """Close derives a shared link's email-template tag from its name: "30-min intro" ->
    "30_min_intro"."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "link"
