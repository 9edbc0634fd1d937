"""Headers every answer carries, whichever layer serves it (Flask's hook, the webhook
endpoint in front of Flask)."""

from __future__ import annotations

# One year, this host only: includeSubDomains or preload would bind the operator's other
# hosts, which this service cannot know about.
HSTS = "max-age=31536000"


def security_headers(*, https: bool) -> tuple[tuple[str, str], ...]:
    headers = (
        ("X-Content-Type-Options", "nosniff"),
        ("X-Frame-Options", "DENY"),
        ("Referrer-Policy", "no-referrer"),
    )
    return (*headers, ("Strict-Transport-Security", HSTS)) if https else headers
