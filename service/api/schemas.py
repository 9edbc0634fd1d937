"""Request and response bodies of the integrator API; the OpenAPI document is built from them."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ConnectSessionIn(Strict):
    account_id: str = Field(min_length=1, max_length=255, description="The integrator's id")
    return_url: str | None = Field(
        default=None,
        max_length=2048,
        description="Where to send the admin afterwards; its origin must be allowed",
        json_schema_extra={"format": "uri"},
    )


class ConnectSessionOut(BaseModel):
    token: str
    connect_url: str
    expires_at: datetime


class CloseUser(BaseModel):
    id: str | None
    name: str | None
    email: str | None


class CloseOrganization(BaseModel):
    id: str | None
    name: str | None


class LinkCounts(BaseModel):
    total: int
    synced: int
    pending: int
    error: int
    deleting: int


class LastSync(BaseModel):
    at: datetime | None
    status: str | None
    run_id: int | None


class ConnectionOut(BaseModel):
    account_id: str
    status: Literal["active", "needs_reauth", "paused", "disconnected"]
    status_reason: str | None
    close_user: CloseUser
    close_organization: CloseOrganization
    links: LinkCounts
    last_sync: LastSync | None
    connected_at: datetime | None
    disconnected_at: datetime | None
    next_sync_at: datetime | None


class LinkOut(BaseModel):
    source_id: str
    name: str | None
    url: str | None
    state: Literal["pending", "synced", "error", "deleting"]
    close_link_id: str | None
    last_error: str | None
    last_synced_at: datetime | None


class LinkPage(BaseModel):
    data: list[LinkOut]
    next_cursor: str | None


class SyncQueued(BaseModel):
    run_id: int
    status: Literal["queued"]


class RunCounts(BaseModel):
    created: int
    updated: int
    deleted: int
    unchanged: int
    failed: int


class RunProgress(BaseModel):
    done: int
    total: int


class SyncRunOut(BaseModel):
    id: int
    account_id: str
    trigger: str
    status: Literal["queued", "running", "succeeded", "partial", "failed", "coalesced"]
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None
    counts: RunCounts
    progress: RunProgress
    error: str | None


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorOut(BaseModel):
    error: ErrorDetail


class WebhookIn(BaseModel):
    id: str = Field(min_length=1, max_length=255)
    type: Literal["event_types.changed"]
    account_id: str = Field(min_length=1, max_length=255)


class WebhookOut(BaseModel):
    status: Literal["accepted", "duplicate"]
