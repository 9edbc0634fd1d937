"""The errors the sandbox answers with, raised by the state and mapped to HTTP in app.py."""

from __future__ import annotations

from typing import Any

NOT_FOUND = "Not found."


class SandboxError(Exception):
    """A Close API error answer: HTTP status and `{"error": ..., "field-errors": ...}`."""

    def __init__(
        self, status: int, message: str, field_errors: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field_errors = field_errors

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.message}
        if self.field_errors:
            body["field-errors"] = self.field_errors
        return body


def validation_error(field_errors: dict[str, str]) -> SandboxError:
    return SandboxError(400, "Validation error", field_errors)


def not_found() -> SandboxError:
    return SandboxError(404, NOT_FOUND)


class OAuthError(Exception):
    """An RFC 6749 error answer of the token endpoint."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(error)
        self.error = error
        self.description = description
        self.status = status
