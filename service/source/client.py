"""Client for the integrator's event-type API (contract: product.md, "Source API").

`listing()` streams pages; the caller learns at the end whether the listing was complete. A page
that fails after retries ends the listing as incomplete, so the sync applies what it read but
deletes nothing: a partial read must never look like mass deletion.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import requests

from service.infra import metrics


class SourceAccountGone(Exception):
    """404: the integrator says the account does not exist (any more)."""


class SourceUnavailable(Exception):
    """The first page could not be read: nothing is known, nothing may be changed."""


@dataclass
class Listing:
    not_modified: bool = False
    complete: bool = False
    etag: str | None = None
    error: str | None = None
    pages: int = 0
    _iterator: Iterator[dict[str, Any]] | None = field(default=None, repr=False)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self._iterator or iter(())


class SourceClient:
    def __init__(
        self,
        *,
        base_url: str,
        token: str,
        http: requests.Session,
        timeout: float = 10.0,
        max_attempts: int = 4,
        base_delay: float = 0.25,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.http = http
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.sleep = sleep
        self._rng = random.Random()  # noqa: S311 - jitter

    def __repr__(self) -> str:
        return f"<SourceClient {self.base_url}>"

    def _get(self, url: str, params: dict[str, str], headers: dict[str, str]) -> requests.Response:
        headers = {
            "Authorization": f"Bearer {self._token}",
            "Accept": "application/json",
            **headers,
        }
        last = ""
        for attempt in range(self.max_attempts):
            try:
                response = self.http.get(url, params=params, headers=headers, timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout) as exc:
                metrics.SOURCE_CALLS.labels("error").inc()
                last = type(exc).__name__
            else:
                metrics.SOURCE_CALLS.labels(str(response.status_code)).inc()
                if response.status_code < 500 and response.status_code != 429:
                    return response
                last = f"HTTP {response.status_code}"
            if attempt + 1 < self.max_attempts:
                self.sleep(self._rng.uniform(0, self.base_delay * 2**attempt))
        raise SourceUnavailable(f"source unavailable ({last})")

    def listing(self, account_id: str, *, etag: str | None = None) -> Listing:
        """The account's event types: the first page is read now (so 304/404/outage are known
        up front), the rest streamed."""
        return self._listing(account_id, "event-types", etag)

    def members(self, account_id: str, *, etag: str | None = None) -> Listing | None:
        """The account's team members (`{"id", "email", "name"}`), paged and cached like event
        types; None when the source answers 404 (the account has no team, or a source that
        predates teams)."""
        try:
            return self._listing(account_id, "members", etag)
        except SourceAccountGone:
            return None

    def _listing(self, account_id: str, collection: str, etag: str | None) -> Listing:
        url = f"{self.base_url}/accounts/{quote(account_id, safe='')}/{collection}"
        first = self._get(url, {}, {"If-None-Match": etag} if etag else {})
        if first.status_code == 304:
            return Listing(not_modified=True, complete=True, etag=etag)
        if first.status_code == 404:
            raise SourceAccountGone(account_id)
        if first.status_code != 200:
            raise SourceUnavailable(f"source answered {first.status_code}")
        page = _page(first)
        listing = Listing(etag=first.headers.get("ETag"), pages=1)

        def items() -> Iterator[dict[str, Any]]:
            current = page
            while True:
                yield from current["data"]
                cursor = current.get("next_cursor")
                if not cursor:
                    listing.complete = True
                    return
                try:
                    response = self._get(url, {"cursor": str(cursor)}, {})
                    if response.status_code != 200:
                        raise SourceUnavailable(f"source answered {response.status_code}")
                    current = _page(response)
                except SourceUnavailable as exc:
                    listing.error = f"listing incomplete after page {listing.pages}: {exc}"
                    return
                listing.pages += 1

        listing._iterator = items()
        return listing


def _page(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        raise SourceUnavailable("source answered invalid JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise SourceUnavailable("source answered JSON without a 'data' list")
    return body
