"""Close's rate limits as the sandbox enforces them: per endpoint group, one bucket per token
and one per organization (3x by default, as Close documents).

Each bucket is a token bucket (equivalent to GCRA) holding at most `limit` requests and
refilling at `limit` per second: a burst of `limit` passes, and a client pacing itself at the
limit is never refused, which a hard fixed window cannot promise. Not thread-safe on its own: the
state calls it under its lock.

What a limited answer says about the limit depends on the header mode (close-api.md: Close
documents a `RateLimit` header, `Retry-After` and the deprecated `rate_reset` in the 429 body, and
a public integration saw no `RateLimit` header at all; no source mentions `RateLimit-Policy`, so
the sandbox never sends it):

| mode | RateLimit header (every answer) | Retry-After (429) | rate_reset in the 429 body |
|---|---|---|---|
| full (default) | yes | yes | yes |
| none | no | yes | yes |
| retry_after_only | no | yes | no |
| body_only | no | no | yes |
| bare | no | no | no |
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

Scope = Literal["key", "organization"]
HeaderMode = Literal["full", "none", "retry_after_only", "body_only", "bare"]
# mode: (RateLimit header, Retry-After on a 429, rate_reset in the 429 body)
HEADER_MODES: dict[str, tuple[bool, bool, bool]] = {
    "full": (True, True, True),
    "none": (False, True, True),
    "retry_after_only": (False, True, False),
    "body_only": (False, False, True),
    "bare": (False, False, False),
}
_SWEEP_ABOVE = 20_000  # buckets; idle (full) ones are forgotten beyond that
_EPSILON = 1e-9  # float slack: a client that waited exactly what it was told gets through


@dataclass
class Bucket:
    limit: float  # requests per second, also the capacity
    level: float
    stamp: float

    @property
    def capacity(self) -> float:
        return max(self.limit, 1.0)

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.limit)
        self.stamp = now

    def seconds_until_full(self) -> float:
        return max(0.0, (self.capacity - self.level) / self.limit)

    def seconds_until_one(self) -> float:
        return max(0.0, (1.0 - self.level) / self.limit)


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    limit: float  # the per-token limit: the quota Close documents per key
    remaining: int  # whole requests left in the tighter bucket
    reset: float  # seconds until the tighter bucket is full again
    retry_after: float = 0.0  # seconds until this request would pass (refused only)
    refused_by: Scope | None = None
    refused_limit: float = 0.0
    headers_mode: HeaderMode = "full"

    def headers(self) -> dict[str, str]:
        """The rate-limit headers of this answer, as the header mode allows."""
        rate_limit, retry_after, _ = HEADER_MODES[self.headers_mode]
        headers = {}
        if rate_limit:
            headers["RateLimit"] = (
                f"limit={_num(self.limit)}, remaining={self.remaining}, reset={_num(self.reset)}"
            )
        if retry_after and not self.allowed:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return headers

    def body(self) -> dict[str, Any]:
        """The JSON body of a 429: the deprecated form Close still sends, with `rate_reset`
        unless the header mode leaves it out."""
        error: dict[str, Any] = {
            "message": "API call count exceeded for this period",
            "rate_limit": self.refused_limit,
            "rate_window": 1,
            "rate_limit_type": self.refused_by,
        }
        if HEADER_MODES[self.headers_mode][2]:
            error = {
                "rate_reset": max(math.ceil(round(self.retry_after * 1000, 6)) / 1000, 0.001),
                **error,
            }
        return {"error": error}


class RateLimiter:
    def __init__(self) -> None:
        self._buckets: dict[tuple[str, str, str], Bucket] = {}

    def clear(self) -> None:
        self._buckets.clear()

    def take(
        self,
        group: str,
        token_key: str,
        org_id: str,
        *,
        token_limit: float,
        org_limit: float,
        enabled: bool,
        now: float,
    ) -> RateDecision:
        """Spend one request from both buckets, or none when either is empty."""
        token = self._bucket(("key", group, token_key), token_limit, now)
        org = self._bucket(("organization", group, org_id), org_limit, now)
        if not enabled:
            return RateDecision(True, token_limit, math.floor(token.capacity), 0.0)
        scopes: tuple[tuple[Scope, Bucket], ...] = (("key", token), ("organization", org))
        empty = [(scope, b) for scope, b in scopes if b.level < 1 - _EPSILON]
        if not empty:
            token.level -= 1
            org.level -= 1
        # Report the bucket with fewer whole requests left (the token's on a tie).
        token_left, org_left = (max(0, math.floor(b.level + _EPSILON)) for b in (token, org))
        tighter, remaining = (org, org_left) if org_left < token_left else (token, token_left)
        if not empty:
            return RateDecision(True, token_limit, remaining, tighter.seconds_until_full())
        scope, refusing = max(empty, key=lambda item: item[1].seconds_until_one())
        return RateDecision(
            False,
            token_limit,
            remaining,
            tighter.seconds_until_full(),
            retry_after=refusing.seconds_until_one(),
            refused_by=scope,
            refused_limit=refusing.limit,
        )

    def _bucket(self, key: tuple[str, str, str], limit: float, now: float) -> Bucket:
        bucket = self._buckets.get(key)
        if bucket is None or bucket.limit != limit:  # new, or the limit changed at runtime
            if len(self._buckets) > _SWEEP_ABOVE:
                self._sweep(now)
            bucket = self._buckets[key] = Bucket(limit=limit, level=max(limit, 1.0), stamp=now)
        bucket.refill(now)
        return bucket

    def _sweep(self, now: float) -> None:
        for key, bucket in list(self._buckets.items()):
            bucket.refill(now)
            if bucket.level >= bucket.capacity:
                del self._buckets[key]


def _num(value: float) -> str:
    """At most three decimals, rounded up (a client that waits this long is never early), no
    trailing zeros: 20, 0.05, 0.334."""
    text = f"{math.ceil(round(value * 1000, 6)) / 1000:.3f}".rstrip("0").rstrip(".")
    return text or "0"
