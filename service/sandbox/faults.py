"""Switches that make the sandbox misbehave like a real, sometimes unwell, Close.

By default faults hit the API groups only; the OAuth endpoints are hit only when "oauth" is
listed in `groups` (a refresh whose answer is lost burns the rotated refresh token, which is a
different experiment from a flaky API). `/_sandbox/*` and the consent page are never affected.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

API_GROUPS = ("me", "scheduling_link_integration", "scheduling_link", "shared_scheduling_link")
ALL_GROUPS = ("oauth", *API_GROUPS)
ERROR_STATUSES = (500, 502, 503)


@dataclass(frozen=True)
class Faults:
    latency_ms: float = 0.0
    error_rate: float = 0.0  # probability of a 5xx
    error_status: int | None = None  # None: one of ERROR_STATUSES at random
    timeout_rate: float = 0.0  # probability of answering only after timeout_seconds
    timeout_seconds: float = 10.0
    timeout_applies_write: bool = False  # whether the slow call still did its work
    fail_next: int = 0  # the next N calls answer fail_status
    fail_status: int = 503
    groups: tuple[str, ...] | None = None

    def applies_to(self, group: str) -> bool:
        return group in API_GROUPS if self.groups is None else group in self.groups

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["groups"] = list(self.groups) if self.groups is not None else None
        return data


@dataclass(frozen=True)
class FaultAction:
    kind: Literal["error", "fail_next", "timeout"]
    status: int = 0  # the answer of an error; 504 for a timeout that did not do the work
    delay: float = 0.0  # seconds to hold the answer back (timeouts)
    applies_write: bool = False


def parse_faults(values: Mapping[str, Any]) -> Faults:
    """Faults from keyword or JSON values; ValueError names what is wrong."""
    known = {f.name for f in dataclasses.fields(Faults)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown fault setting(s): {', '.join(unknown)}")
    clean: dict[str, Any] = {}
    for name in ("latency_ms", "timeout_seconds"):
        if name in values:
            clean[name] = _number(name, values[name], low=0.0)
    for name in ("error_rate", "timeout_rate"):
        if name in values:
            clean[name] = _number(name, values[name], low=0.0, high=1.0)
    if values.get("error_status") is not None:
        clean["error_status"] = _status(values, "error_status")
    if "fail_status" in values:
        clean["fail_status"] = _status(values, "fail_status")
    if "fail_next" in values:
        count = values["fail_next"]
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError("fail_next must be a whole number >= 0")
        clean["fail_next"] = count
    if "timeout_applies_write" in values:
        if not isinstance(values["timeout_applies_write"], bool):
            raise ValueError("timeout_applies_write must be true or false")
        clean["timeout_applies_write"] = values["timeout_applies_write"]
    groups = values.get("groups")
    if groups is not None:
        if isinstance(groups, str) or not all(g in ALL_GROUPS for g in groups):
            raise ValueError(f"groups must be a list drawn from {', '.join(ALL_GROUPS)}")
        clean["groups"] = tuple(groups)
    return Faults(**clean)


def _number(name: str, value: Any, *, low: float, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    if value < low or (high is not None and value > high):
        bounds = f"between {low:g} and {high:g}" if high is not None else f">= {low:g}"
        raise ValueError(f"{name} must be {bounds}")
    return float(value)


def _status(values: Mapping[str, Any], name: str) -> int:
    status = values[name]
    if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
        raise ValueError(f"{name} must be an HTTP error status (400-599)")
    return int(status)
