"""Webhook signatures: `X-LinkSync-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>`.

The signed message is "<t>.<raw body>" with WEBHOOK_SECRET. Several v1= entries may be sent
(the integrator rotating its secret); one match is enough. Pure functions, fuzzed with
Hypothesis in tests/unit/test_signatures.py.
"""

from __future__ import annotations

import hashlib
import hmac

TOLERANCE_SECONDS = 300
MAX_HEADER = 2048


class SignatureError(ValueError):
    """The header is missing, malformed, stale or does not match."""


def sign(secret: str, timestamp: int, body: bytes) -> str:
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def parse_signature_header(value: str | None) -> tuple[int, list[str]]:
    """The timestamp and the v1= signatures (lower-case hex) of a signature header. Entries
    with other keys (a future v2=) are ignored; anything malformed raises SignatureError."""
    if not value:
        raise SignatureError("missing X-LinkSync-Signature header")
    if len(value) > MAX_HEADER:
        raise SignatureError("X-LinkSync-Signature header is too long")
    timestamp: int | None = None
    signatures: list[str] = []
    for part in value.split(","):
        key, sep, item = part.strip().partition("=")
        if not sep:
            raise SignatureError("X-LinkSync-Signature must be t=<unix seconds>,v1=<hex>")
        if key == "t":
            if timestamp is not None:
                raise SignatureError("X-LinkSync-Signature has more than one t= timestamp")
            if not item.isascii() or not item.isdigit() or len(item) > 12:
                raise SignatureError("t= must be a unix timestamp in seconds")
            timestamp = int(item)
        elif key == "v1":
            if len(item) != 64 or any(ch not in "0123456789abcdef" for ch in item.lower()):
                raise SignatureError("v1= must be a hex HMAC-SHA256")
            signatures.append(item.lower())
    if timestamp is None:
        raise SignatureError("X-LinkSync-Signature has no t= timestamp")
    if not signatures:
        raise SignatureError("X-LinkSync-Signature has no v1= signature")
    return timestamp, signatures


def verify(
    secret: str,
    header: str | None,
    body: bytes,
    now: float,
    tolerance: int = TOLERANCE_SECONDS,
) -> int:
    """Return the header's timestamp when one of its signatures signs this body and the
    timestamp is within `tolerance` seconds of `now` (either direction); else SignatureError."""
    timestamp, signatures = parse_signature_header(header)
    if abs(now - timestamp) > tolerance:
        raise SignatureError("timestamp is more than 5 minutes away from our clock")
    expected = sign(secret, timestamp, body)
    if not any(hmac.compare_digest(expected, candidate) for candidate in signatures):
        raise SignatureError("signature does not match")
    return timestamp
