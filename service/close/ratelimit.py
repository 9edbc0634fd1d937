"""A shared request budget per Close organization and per token, fed by Close's answers.

Close limits each endpoint group per token and, at three times that, per organization. Every
caller reserves one slot in both buckets before a call and sleeps for the wait it is told.

What Close tells us, and how we use it (close-api.md: honour whichever signal is present, depend
on none of them):
- `RateLimit: limit=L, remaining=R, reset=S` paces the token's bucket at R/S requests per second
  (what is left of this window spread over what is left of it), never above the configured
  default rate. `limit` is the quota of a window whose length Close does not state, so it is not
  a rate and is not used as one; `remaining=0` blocks the bucket until the reset.
- A 429 blocks the bucket (and the org's) for the LONGEST of the signals it carries: RateLimit
  `reset`, `Retry-After`, the old body's `rate_reset`; at least MIN_LIMITED_WAIT. A 429 that
  carries none of them is backed off exponentially with jitter by the client (RetryPolicy).
- Without any RateLimit header, each 429 also halves the token bucket's rate (down to MIN_RATE),
  and each answer that was not limited wins a little of it back (up to the default): so a limit
  below our default is found after a 429 or two instead of being hit again and again.

With Redis the buckets are shared by every worker process (atomic Lua); without Redis they live
in the process, which is all the embedded mode has.
"""

from __future__ import annotations

import math
import re
import threading
import time
from dataclasses import dataclass
from typing import Protocol

import redis

DEFAULT_RATE = 10.0  # per second and token, unless configured otherwise
ORG_FACTOR = 3.0  # Close: the organization limit is three times the per-key limit
BURST_SECONDS = 0.25  # bucket depth as a fraction of a second of rate: keeps bursts small
MIN_RATE = 0.5  # per second: the slowest a bucket is ever paced
MIN_LIMITED_WAIT = 0.25  # seconds: the least a 429 blocks for, whatever it says
MAX_WAIT = 300.0  # seconds: a signal above this is taken as this (a typo must not stall a day)
DECREASE = 0.5  # the rate multiplier of a 429 that came without a RateLimit header
RECOVER = 0.02  # the share of the default rate won back by each answer that was not limited


@dataclass(frozen=True)
class RateInfo:
    limit: float | None = None
    remaining: float | None = None
    reset: float | None = None  # seconds, from the RateLimit header
    retry_after: float | None = None  # seconds, from Retry-After
    body_reset: float | None = None  # seconds, from the 429 body's error.rate_reset

    @property
    def has_header(self) -> bool:
        return self.remaining is not None or self.reset is not None

    def limited_wait(self) -> float | None:
        """How long a 429 blocks: the longest signal present; None when none is."""
        signals = [v for v in (self.reset, self.retry_after, self.body_reset) if v is not None]
        return min(max(max(signals), MIN_LIMITED_WAIT), MAX_WAIT) if signals else None

    def pace(self, default_rate: float) -> float | None:
        """The token bucket's rate this answer asks for, or None when it says nothing."""
        if self.remaining is None or self.reset is None:
            return None
        if self.reset <= 0:
            return default_rate
        return max(MIN_RATE, min(default_rate, self.remaining / self.reset))


_PARAM = re.compile(r"([A-Za-z_-]+)\s*=\s*([^,;\s]+)")


def _number(raw: object) -> float | None:
    """A finite, non-negative number of seconds or requests; None for anything else."""
    try:
        value = float(str(raw).strip().strip('"'))
    except ValueError:
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return value


def parse_rate_headers(headers: object, body: object = None) -> RateInfo:
    """Read the `RateLimit` header, `Retry-After` and the old JSON body. Anything malformed is
    ignored (as if absent): a bad number must never crash a run."""
    get = getattr(headers, "get", None)
    if get is None:
        return RateInfo()
    values: dict[str, float] = {}
    raw = get("RateLimit")
    if isinstance(raw, str):
        for key, text in _PARAM.findall(raw):
            number = _number(text)
            if number is not None:
                values.setdefault(key.lower(), number)
    retry_after = get("Retry-After")
    body_reset = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and not isinstance(error.get("rate_reset"), bool):
            raw_reset = error.get("rate_reset")
            body_reset = _number(raw_reset) if raw_reset is not None else None
    return RateInfo(
        limit=values.get("limit"),
        remaining=values.get("remaining"),
        reset=values.get("reset"),
        retry_after=_number(retry_after) if isinstance(retry_after, str) else None,
        body_reset=body_reset,
    )


class RateBudget(Protocol):
    def reserve(self, org: str, token_key: str, group: str) -> float:
        """Take a slot in both buckets; return how many seconds to wait before calling."""

    def observe(
        self, org: str, token_key: str, group: str, info: RateInfo, limited_for: float | None
    ) -> None:
        """Learn from an answer; `limited_for` is how long a 429 blocks (None: not a 429)."""


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
local pace = tonumber(ARGV[2])
local factor = tonumber(ARGV[3])
local recover = tonumber(ARGV[4])
local block_until = tonumber(ARGV[5])
local default_rate = tonumber(ARGV[6])
local rate = tonumber(redis.call('HGET', KEYS[1], 'rate')) or default_rate
if pace > 0 then
  rate = pace
elseif factor > 0 then
  rate = math.max(%(min_rate)f, rate * factor)
elseif recover > 0 then
  rate = math.min(default_rate, rate + recover)
end
redis.call('HSET', KEYS[1], 'rate', rate)
if block_until > 0 then
  local current = tonumber(redis.call('HGET', KEYS[1], 'blocked')) or 0
  if block_until > current then redis.call('HSET', KEYS[1], 'blocked', block_until) end
end
redis.call('EXPIRE', KEYS[1], 3600)
return 1
""" % {"min_rate": MIN_RATE}


@dataclass(frozen=True)
class _Learned:
    """What one answer teaches the token bucket (the org bucket only learns blocks)."""

    pace: float  # > 0: set the rate to this
    factor: float  # > 0: multiply the rate by this (a 429 without a RateLimit header)
    recover: float  # > 0: add this to the rate, up to the default (an answer not limited)
    block_until: float  # > 0: no call before this time


def _learn(now: float, info: RateInfo, limited_for: float | None, default: float) -> _Learned:
    pace = info.pace(default) or 0.0
    headerless = not info.has_header
    if limited_for is not None:
        return _Learned(pace, DECREASE if headerless else 0.0, 0.0, now + limited_for)
    block = now + info.reset if info.remaining == 0 and info.reset else 0.0
    return _Learned(pace, 0.0, RECOVER * default if headerless else 0.0, block)


class RedisRateBudget:
    def __init__(
        self,
        client: redis.Redis,
        prefix: str = "linksync:rl:",
        default_rate: float = DEFAULT_RATE,
    ) -> None:
        self.redis = client
        self.prefix = prefix
        self.default_rate = default_rate
        self._reserve = client.register_script(_RESERVE_LUA)
        self._observe = client.register_script(_OBSERVE_LUA)

    def _keys(self, org: str, token_key: str, group: str) -> tuple[str, str]:
        return f"{self.prefix}org:{org}:{group}", f"{self.prefix}tok:{token_key}:{group}"

    def reserve(self, org: str, token_key: str, group: str) -> float:
        keys = self._keys(org, token_key, group)
        wait = self._reserve(
            keys=list(keys),
            args=[time.time(), self.default_rate * ORG_FACTOR, self.default_rate],
        )
        return float(wait)

    def observe(
        self, org: str, token_key: str, group: str, info: RateInfo, limited_for: float | None
    ) -> None:
        now = time.time()
        org_key, tok_key = self._keys(org, token_key, group)
        learned = _learn(now, info, limited_for, self.default_rate)
        self._observe(
            keys=[tok_key],
            args=[
                now,
                learned.pace,
                learned.factor,
                learned.recover,
                learned.block_until,
                self.default_rate,
            ],
        )
        if limited_for is not None:
            self._observe(
                keys=[org_key],
                args=[now, 0, 0, 0, learned.block_until, self.default_rate * ORG_FACTOR],
            )


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

    def __init__(self, default_rate: float = DEFAULT_RATE) -> None:
        self.default_rate = default_rate
        self._lock = threading.Lock()
        self._buckets: dict[str, _Bucket] = {}

    def _bucket(self, key: str, default: float) -> _Bucket:
        return self._buckets.setdefault(key, _Bucket(rate=default))

    def reserve(self, org: str, token_key: str, group: str) -> float:
        now = time.time()
        with self._lock:
            return max(
                self._bucket(f"org:{org}:{group}", self.default_rate * ORG_FACTOR).reserve(now),
                self._bucket(f"tok:{token_key}:{group}", self.default_rate).reserve(now),
            )

    def observe(
        self, org: str, token_key: str, group: str, info: RateInfo, limited_for: float | None
    ) -> None:
        now = time.time()
        learned = _learn(now, info, limited_for, self.default_rate)
        with self._lock:
            tok = self._bucket(f"tok:{token_key}:{group}", self.default_rate)
            if learned.pace > 0:
                tok.rate = learned.pace
            elif learned.factor > 0:
                tok.rate = max(MIN_RATE, tok.rate * learned.factor)
            elif learned.recover > 0:
                tok.rate = min(self.default_rate, tok.rate + learned.recover)
            tok.blocked = max(tok.blocked, learned.block_until)
            if limited_for is not None:
                org_bucket = self._bucket(f"org:{org}:{group}", self.default_rate * ORG_FACTOR)
                org_bucket.blocked = max(org_bucket.blocked, learned.block_until)
