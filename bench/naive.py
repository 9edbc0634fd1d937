"""The naive baseline: what a straightforward integration does on every sync.

Fetch every event type of the account, then upsert every one of them, one at a time, with no
diff, no pacing and no concurrency; on a 429, wait what Close advertises (Retry-After) and retry.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import requests


@dataclass
class NaiveResult:
    writes: int = 0
    calls: int = 0
    rate_limited: int = 0


def naive_sync(
    http: requests.Session,
    source_url: str,
    source_token: str,
    api_url: str,
    access_token: str,
    account: str,
) -> NaiveResult:
    result = NaiveResult()
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"cursor": cursor} if cursor else {}
        page = http.get(
            f"{source_url}/accounts/{account}/event-types",
            params=params,
            headers={"Authorization": f"Bearer {source_token}"},
            timeout=30,
        ).json()
        items += page["data"]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    for item in items:
        if item.get("active") is False:
            continue
        body = {
            "source_id": str(item["id"]),
            "name": item["name"],
            "url": item["url"],
            "description": item.get("description"),
            "source_type": item.get("kind"),
            "duration_in_minutes": item.get("duration_minutes"),
        }
        while True:
            response = http.post(
                f"{api_url}/scheduling_link/integration/",
                json=body,
                headers={"Authorization": f"Bearer {access_token}"},
                timeout=30,
            )
            result.calls += 1
            if response.status_code != 429:
                result.writes += 1
                break
            result.rate_limited += 1
            time.sleep(float(response.headers.get("Retry-After", "1")))
    return result
