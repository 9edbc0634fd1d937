"""The one client for Close's REST API: timeouts, the shared rate budget, retries, typed errors.

Retry policy, all in `CloseClient._send`:
- 429: wait the longest of what Close says (RateLimit reset / Retry-After / body rate_reset),
  shared with every worker through the rate budget; a 429 that says nothing is backed off
  exponentially with jitter; bounded attempts.
- 5xx, connection errors and timeouts: exponential backoff with full jitter; bounded attempts.
  Safe because every write we make is idempotent (upsert keyed by source_id, delete by source_id).
- 401: ask the token provider for a fresh token once, then retry once.
- 400/403/404: no retry; raised as typed errors for the caller to record.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter

from service.close.ratelimit import RateBudget, parse_rate_headers
from service.infra import metrics


class CloseError(Exception):
    def __init__(self, message: str, *, status: int | None = None, detail: object = None) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


class CloseValidationError(CloseError):
    """400: Close refused the payload. Not retried; recorded on the link."""


class CloseAuthError(CloseError):
    """401 even after one refresh."""


class CloseForbidden(CloseError):
    pass


class CloseNotFound(CloseError):
    pass


class CloseUnavailable(CloseError):
    """5xx, timeouts or 429s that outlasted the retry budget: try again in a later run."""


class TokenProvider(Protocol):
    def get(self) -> str:
        """A valid access token (refreshing first when it is about to expire)."""

    def refresh_after_401(self, rejected: str) -> str:
        """A new access token after Close rejected `rejected`."""


def path_segment(value: str) -> str:
    """`value` as one URL path segment: every reserved character percent-encoded, and `.` too,
    because requests (urllib3) would otherwise resolve a `.` or `..` segment away."""
    return quote(value, safe="").replace(".", "%2E")


def endpoint_group(path: str) -> str:
    if path.startswith("/scheduling_link/integration/"):
        return "scheduling_link_integration"
    if path.startswith("/scheduling_link/"):
        return "scheduling_link"
    if path.startswith("/shared_scheduling_link"):
        return "shared_scheduling_link"
    return "me"


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    base_delay: float = 0.25
    max_delay: float = 8.0
    max_rate_limited: int = 20  # 429s tolerated per call before giving up for this run
    bare_429_delay: float = 1.0  # first wait after a 429 that names no wait at all

    def backoff(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))

    def bare_429_backoff(self, attempt: int, rng: random.Random) -> float:
        """Exponential from `bare_429_delay`, with jitter in its upper half (never near 0)."""
        ceiling = min(self.max_delay, self.bare_429_delay * 2 ** max(attempt - 1, 0))
        return rng.uniform(ceiling / 2, ceiling)


def make_http_session(pool_size: int = 16) -> requests.Session:
    """A keep-alive session; one per worker process is reused across tasks."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = "LinkSync-for-Close/0.1"
    return session


class CloseClient:
    """Calls for one Close user (one connection): its org, its token, its budget slot."""

    def __init__(
        self,
        *,
        api_url: str,
        http: requests.Session,
        budget: RateBudget,
        tokens: TokenProvider,
        org_id: str,
        token_key: str,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.http = http
        self.budget = budget
        self.tokens = tokens
        self.org_id = org_id
        self.token_key = token_key
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.sleep = sleep
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not security

    # Endpoints --------------------------------------------------------------------------

    def me(self) -> dict[str, Any]:
        return self._send("GET", "/me/")

    def upsert_integration_link(self, fields: dict[str, Any]) -> dict[str, Any]:
        return self._send("POST", "/scheduling_link/integration/", json=fields)

    def delete_integration_link(self, source_id: str) -> bool:
        """True when deleted, False when Close had no such link (already gone)."""
        try:
            self._send("DELETE", f"/scheduling_link/integration/{path_segment(source_id)}/")
        except CloseNotFound:
            return False
        return True

    def organization(self, org_id: str) -> dict[str, Any]:
        """The org with its memberships (`user_id`, `user_email`, `permissions_granted`)."""
        return self._send("GET", f"/organization/{quote(org_id, safe='')}/")

    def create_shared_link(self, fields: dict[str, Any]) -> dict[str, Any]:
        return self._send("POST", "/shared_scheduling_link/", json=fields)

    def update_shared_link(self, shared_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        return self._send(
            "PUT", f"/shared_scheduling_link/{quote(shared_id, safe='')}/", json=fields
        )

    def delete_shared_link(self, shared_id: str) -> bool:
        """True when deleted, False when Close had no such shared link (already gone)."""
        try:
            self._send("DELETE", f"/shared_scheduling_link/{quote(shared_id, safe='')}/")
        except CloseNotFound:
            return False
        return True

    def map_shared_link(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._send("POST", "/shared_scheduling_link_association/", json=body)

    def unmap_shared_link(self, body: dict[str, Any]) -> bool:
        """True when unmapped, False when Close had no such mapping (already gone)."""
        try:
            self._send("POST", "/shared_scheduling_link_association/unmap/", json=body)
        except CloseNotFound:
            return False
        return True

    def iter_links(self, page_size: int = 100, max_pages: int = 1000) -> Iterator[dict[str, Any]]:
        """Every link of the user, following `has_more`, and stopping safely if it never turns
        false: a page that brings no new id ends the listing, and so does `max_pages`."""
        skip = 0
        seen: set[str] = set()
        for _ in range(max_pages):
            page = self._send(
                "GET", "/scheduling_link/", params={"_skip": skip, "_limit": page_size}
            )
            data = [link for link in page.get("data") or [] if isinstance(link, dict)]
            fresh = [link for link in data if str(link.get("id")) not in seen]
            seen.update(str(link.get("id")) for link in fresh)
            yield from fresh
            if not page.get("has_more") or not fresh:
                return
            skip += len(data)
        raise CloseError(f"Close listed more than {max_pages} pages of links; stopped there")

    # Transport --------------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        *,
        json: object = None,
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        group = endpoint_group(path)
        token = self.tokens.get()
        refreshed = False
        failures = 0
        limited = 0
        while True:
            wait = self.budget.reserve(self.org_id, self.token_key, group)
            if wait > 0:
                metrics.CLOSE_WAIT_SECONDS.labels(group).inc(wait)
                self.sleep(wait)
            try:
                response = self.http.request(
                    method,
                    self.api_url + path,
                    json=json,
                    params=params,
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=self.timeout,
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                metrics.CLOSE_CALLS.labels(group, "error").inc()
                failures += 1
                if failures >= self.retry.max_attempts:
                    raise CloseUnavailable(f"Close unreachable: {type(exc).__name__}") from None
                self.sleep(self.retry.backoff(failures, self.rng))
                continue

            status = response.status_code
            metrics.CLOSE_CALLS.labels(group, str(status)).inc()
            body = _json(response)
            info = parse_rate_headers(response.headers, body)
            if status == 429:
                metrics.CLOSE_RATE_LIMITED.labels(group).inc()
                limited += 1
                said = info.limited_wait()
                block = said if said is not None else self.retry.bare_429_backoff(limited, self.rng)
                self.budget.observe(self.org_id, self.token_key, group, info, block)
                if limited > self.retry.max_rate_limited:
                    raise CloseUnavailable("Close kept rate limiting", status=429)
                continue  # the budget now holds the wait: every caller of this group waits
            self.budget.observe(self.org_id, self.token_key, group, info, None)

            if status < 300:
                return body if isinstance(body, dict) else {}
            if status == 401 and not refreshed:
                refreshed = True
                token = self.tokens.refresh_after_401(token)
                continue
            if status >= 500:
                failures += 1
                if failures >= self.retry.max_attempts:
                    raise CloseUnavailable(f"Close answered {status}", status=status)
                self.sleep(self.retry.backoff(failures, self.rng))
                continue
            raise _error_for(status, body)


def _json(response: requests.Response) -> object:
    if not response.content:
        return {}
    try:
        return response.json()
    except ValueError:
        return {}


def _error_for(status: int, body: object) -> CloseError:
    detail = body if isinstance(body, dict) else {}
    message = _describe(detail) or f"Close answered {status}"
    if status == 400:
        return CloseValidationError(message, status=status, detail=detail)
    if status == 401:
        return CloseAuthError("Close rejected the access token", status=status)
    if status == 403:
        return CloseForbidden(message, status=status, detail=detail)
    if status == 404:
        return CloseNotFound(message, status=status, detail=detail)
    return CloseError(message, status=status, detail=detail)


def _describe(body: dict[str, Any]) -> str:
    field_errors = body.get("field-errors")
    if isinstance(field_errors, dict) and field_errors:
        return "; ".join(f"{field}: {msg}" for field, msg in sorted(field_errors.items()))
    error = body.get("error")
    if isinstance(error, str):
        return error
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    return ""


class StaticToken:
    """A TokenProvider for one call made with a token not yet stored (the OAuth callback)."""

    def __init__(self, access_token: str) -> None:
        self._token = access_token

    def __repr__(self) -> str:
        return "<StaticToken>"

    def get(self) -> str:
        return self._token

    def refresh_after_401(self, rejected: str) -> str:
        raise CloseAuthError("Close rejected a brand-new access token", status=401)
