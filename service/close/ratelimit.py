"""A shared request budget per Close organization and per token, fed by Close's headers.

Close limits each endpoint group per token and, at three times that, per organization. Every
caller reserves one slot in both buckets before a call and sleeps for the wait it is told; the
`RateLimit` header of each answer re-tunes the bucket's rate, and a 429 (or `remaining=0`) blocks
the bucket until Close's reset. With Redis the buckets are shared by every worker process
(atomic Lua); without Redis they live in the process, which is all the embedded mode has.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from typing import Protocol

import redis

DEFAULT_RATE = 10.0  # per second and token, until Close's headers tell us the real limit
ORG_FACTOR = 3.0  # Close: the organization limit is three times the per-key limit
BURST_SECONDS = 0.25  # bucket depth as a fraction of a second of rate: keeps bursts small


@dataclass(frozen=True)
class RateInfo:
    limit: float | None = None
    remaining: float | None = None
    reset: float | None = None  # seconds
    window: float = 1.0


_PARAM = re.compile(r"(\w+)\s*=\s*([0-9.]+)")


def parse_rate_headers(headers: dict[str, str] | object, body: object = None) -> RateInfo:
    """Read the IETF `RateLimit` header, `RateLimit-Policy`, `Retry-After` and the old JSON body."""
    get = headers.get if hasattr(headers, "get") else (lambda _k, _d=None: None)
    values: dict[str, float] = {}
    raw = get("RateLimit") or get("ratelimit")
    if raw:
        values = {k.lower(): float(v) for k, v in _PARAM.findall(raw)}
    window = 1.0
    policy = get("RateLimit-Policy") or get("ratelimit-policy")
    if policy:
        match = re.search(r"w\s*=\s*([0-9.]+)", policy)
        if match:
            window = max(float(match.group(1)), 0.001)
        if "limit" not in values:
            first = re.match(r"\s*([0-9.]+)", policy)
            if first:
                values["limit"] = float(first.group(1))
    reset = values.get("reset")
    retry_after = get("Retry-After") or get("retry-after")
    if retry_after:
        try:
            reset = max(reset or 0.0, float(retry_after)) if reset is None else reset
        except ValueError:
            pass
    if reset is None and isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("rate_reset"), int | float):
            reset = float(error["rate_reset"])
    return RateInfo(values.get("limit"), values.get("remaining"), reset, window)


class RateBudget(Protocol):
    def reserve(self, org: str, token_key: str, group: str) -> float:
        """Take a slot in both buckets; return how many seconds to wait before calling."""

    def observe(self, org: str, token_key: str, group: str, info: RateInfo, limited: bool) -> None:
        """Learn from an answer; `limited` is True for a 429."""


# Each bucket: rate (tokens/s), level (tokens, may go negative = queued reservations),
# stamp (time of level), blocked_until. The Lua script and the Python class do the same math.
_RESERVE_LUA = """
local now = tonumber(ARGV[1])
local wait = 0
for i, key in ipairs(KEYS) do
  local default_rate = tonumber(ARGV[1 + i])
  local b = redis.call('HMGET', key, 'rate', 'level', 'stamp', 'blocked')
  local rate = tonumber(b[1]) or default_rate
  local depth = math.max(rate * %(burst)f, 1)
  local level = tonumber(b[2]) or depth
  local stamp = tonumber(b[3]) or now
  local blocked = tonumber(b[4]) or 0
  level = math.min(depth, level + (now - stamp) * rate)
  local start = now
  if blocked > now then
    level = math.min(level, depth - (blocked - now) * rate)
    start = blocked
  end
  level = level - 1
  local w = 0
  if level < 0 then w = -level / rate end
  if blocked > now then w = math.max(w, blocked - now) end
  if w > wait then wait = w end
  redis.call('HSET', key, 'rate', rate, 'level', level, 'stamp', now)
  redis.call('EXPIRE', key, 3600)
end
return tostring(wait)
""" % {"burst": BURST_SECONDS}

_OBSERVE_LUA = """
local now = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local block_until = tonumber(ARGV[3])
if rate > 0 then redis.call('HSET', KEYS[1], 'rate', rate) end
if block_until > 0 then
  local current = tonumber(redis.call('HGET', KEYS[1], 'blocked')) or 0
  if block_until > current then redis.call('HSET', KEYS[1], 'blocked', block_until) end
end
redis.call('EXPIRE', KEYS[1], 3600)
return 1
"""


def _block_until(now: float, info: RateInfo, limited: bool) -> float:
    if limited:
        return now + max(info.reset if info.reset is not None else 1.0, 0.05)
    if info.remaining is not None and info.remaining <= 0 and info.reset:
        return now + info.reset
    return 0.0


class RedisRateBudget:
    def __init__(self, client: redis.Redis, prefix: str = "linksync:rl:") -> None:
        self.redis = client
        self.prefix = prefix
        self._reserve = client.register_script(_RESERVE_LUA)
        self._observe = client.register_script(_OBSERVE_LUA)

    def _keys(self, org: str, token_key: str, group: str) -> tuple[str, str]:
        return f"{self.prefix}org:{org}:{group}", f"{self.prefix}tok:{token_key}:{group}"

    def reserve(self, org: str, token_key: str, group: str) -> float:
        keys = self._keys(org, token_key, group)
        wait = self._reserve(
            keys=list(keys), args=[time.time(), DEFAULT_RATE * ORG_FACTOR, DEFAULT_RATE]
        )
        return float(wait)

    def observe(self, org: str, token_key: str, group: str, info: RateInfo, limited: bool) -> None:
        now = time.time()
        org_key, tok_key = self._keys(org, token_key, group)
        per_second = info.limit / info.window if info.limit else 0.0
        block = _block_until(now, info, limited)
        # The header describes the tighter bucket, the token's; the org allows ORG_FACTOR times it.
        self._observe(keys=[tok_key], args=[now, per_second, block])
        self._observe(keys=[org_key], args=[now, per_second * ORG_FACTOR, block if limited else 0])


@dataclass
class _Bucket:
    rate: float
    level: float | None = None
    stamp: float = 0.0
    blocked: float = 0.0

    def reserve(self, now: float) -> float:
        depth = max(self.rate * BURST_SECONDS, 1.0)
        level = (
            depth if self.level is None else min(depth, self.level + (now - self.stamp) * self.rate)
        )
        if self.blocked > now:
            level = min(level, depth - (self.blocked - now) * self.rate)
        level -= 1
        wait = -level / self.rate if level < 0 else 0.0
        if self.blocked > now:
            wait = max(wait, self.blocked - now)
        self.level, self.stamp = level, now
        return wait


class LocalRateBudget:
    """The same buckets inside one process (the embedded mode has one worker)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, _Bucket] = {}

    def _bucket(self, key: str, default: float) -> _Bucket:
        return self._buckets.setdefault(key, _Bucket(rate=default))

    def reserve(self, org: str, token_key: str, group: str) -> float:
        now = time.time()
        with self._lock:
            return max(
                self._bucket(f"org:{org}:{group}", DEFAULT_RATE * ORG_FACTOR).reserve(now),
                self._bucket(f"tok:{token_key}:{group}", DEFAULT_RATE).reserve(now),
            )

    def observe(self, org: str, token_key: str, group: str, info: RateInfo, limited: bool) -> None:
        now = time.time()
        block = _block_until(now, info, limited)
        per_second = info.limit / info.window if info.limit else 0.0
        with self._lock:
            tok = self._bucket(f"tok:{token_key}:{group}", DEFAULT_RATE)
            org_bucket = self._bucket(f"org:{org}:{group}", DEFAULT_RATE * ORG_FACTOR)
            if per_second:
                tok.rate, org_bucket.rate = per_second, per_second * ORG_FACTOR
            tok.blocked = max(tok.blocked, block)
            if limited:
                org_bucket.blocked = max(org_bucket.blocked, block)
