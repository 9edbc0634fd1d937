"""What happens around every Close call (API and OAuth token/revoke) besides its own work:
latency, the rate limit with its RateLimit headers and 429s, and injected faults.

Order per call: count it, hold it for the latency, authenticate (the caller), spend the rate
budget (a 429 does no work), draw a fault (a 5xx does no work; a timeout answers late, having
done the work or not as configured), then the handler.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Response, g, jsonify

from service.sandbox.state import SandboxState


def hold(state: SandboxState, group: str) -> None:
    """Sleep for the configured latency of `group` (outside every lock)."""
    delay = state.latency_for(group)
    if delay > 0:
        time.sleep(delay)


def admit(state: SandboxState, group: str, token_key: str, org_id: str) -> Response | None:
    """Spend the rate budget and draw a fault: an answer that replaces the handler's, or None
    to go on. The RateLimit headers are added to whatever is answered, by `finish`."""
    decision = state.take(group, token_key, org_id)
    g.sandbox_rate = decision
    if not decision.allowed:
        return _json(decision.body(), 429)
    fault = state.draw_fault(group)
    if fault is None:
        return None
    if fault.kind == "timeout":
        if fault.applies_write:
            g.sandbox_delay = fault.delay  # do the work now, answer too late (see `finish`)
            return None
        time.sleep(fault.delay)
        return _json({"error": "Gateway timeout (injected by the sandbox)."}, fault.status)
    return _json({"error": f"Server error (injected by the sandbox: {fault.kind})."}, fault.status)


def finish(response: Response) -> Response:
    """after_request: RateLimit headers on every rate-limited answer; a late answer's delay."""
    decision = g.pop("sandbox_rate", None)
    if decision is not None:
        response.headers.update(decision.headers())
    delay = g.pop("sandbox_delay", 0.0)
    if delay:
        time.sleep(delay)
    return response


def _json(body: dict[str, Any], status: int) -> Response:
    response = jsonify(body)
    response.status_code = status
    return response
