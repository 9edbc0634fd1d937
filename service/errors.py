"""Domain errors that entry points map to HTTP answers in one place (service.app)."""

from __future__ import annotations


class DomainError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class ValidationFailed(DomainError):
    status = 400
    code = "invalid_request"


class Unauthorized(DomainError):
    status = 401
    code = "unauthorized"


class NotFound(DomainError):
    status = 404
    code = "not_found"


class Conflict(DomainError):
    status = 409
    code = "conflict"


class Gone(DomainError):
    status = 410
    code = "gone"


class PayloadTooLarge(DomainError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(DomainError):
    status = 415
    code = "unsupported_media_type"


class TooManyRequests(DomainError):
    status = 429
    code = "rate_limited"


class UpstreamUnavailable(DomainError):
    status = 503
    code = "upstream_unavailable"


class DatabaseUnavailable(UpstreamUnavailable):
    """The database is unreachable (restarting, connections terminated): retry shortly."""

    code = "database_unavailable"

    def __init__(
        self, message: str = "The database is unavailable right now; retry shortly."
    ) -> None:
        super().__init__(message)
