"""The events LinkSync sends to the integrator (signed webhooks to INTEGRATOR_WEBHOOK_URL) and
serves in the feed (GET /api/v1/events): one model per type, so the OpenAPI document lists every
payload. service.infra.outbox writes them; tests validate what it writes against these."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from service.api.schemas import Query

ERRORS_LISTED = "at most 50 listed; the *_total fields count them all"


class EventCloseUser(BaseModel):
    id: str | None
    name: str | None
    email: str | None


class EventCloseOrganization(BaseModel):
    id: str | None
    name: str | None


class ConnectedData(BaseModel):
    close_user: EventCloseUser
    close_organization: EventCloseOrganization


class ReconnectedData(ConnectedData):
    previous_status: Literal["active", "needs_reauth", "paused", "disconnected"]


class StatusData(BaseModel):
    reason: str | None = Field(description="Why, as shown to the admin")


class DisconnectedData(BaseModel):
    links_kept: bool = Field(description="True when the links were left in Close")
    reason: str | None


class RunCountsData(BaseModel):
    created: int
    updated: int
    deleted: int
    unchanged: int
    failed: int


class FailingLink(BaseModel):
    source_id: str
    name: str | None
    state: Literal["pending", "synced", "error", "deleting"]
    error: str | None = Field(description="The link's last error (at most 500 characters)")


class SyncFailedData(BaseModel):
    run_id: int = Field(description="GET /api/v1/sync-runs/{run_id} for the run")
    trigger: str
    status: Literal["failed", "partial"]
    counts: RunCountsData
    error: str | None
    failing_links: list[FailingLink] = Field(description="At most 20, by source_id")
    failing_links_total: int


class SyncCompletedData(BaseModel):
    run_id: int
    trigger: str
    status: Literal["succeeded"]
    counts: RunCountsData


class StartedFailing(BaseModel):
    source_id: str
    name: str | None
    error: str | None


class StoppedFailing(BaseModel):
    source_id: str
    name: str | None


class LinksErrorsChangedData(BaseModel):
    started_failing: list[StartedFailing] = Field(description=ERRORS_LISTED)
    stopped_failing: list[StoppedFailing] = Field(description=ERRORS_LISTED)
    started_failing_total: int
    stopped_failing_total: int
    failing_total: int = Field(description="Links failing now")


class MemberCoverage(BaseModel):
    member_id: str
    change: Literal["connected", "disconnected", "matched", "unmatched"] = Field(
        description="What happened: their own connection became active or ended, or their "
        "email now matches (or no longer matches) a Close user of the organization"
    )
    covered: bool
    reason: str | None = Field(description="Why the member is not covered")


class CoverageChangedData(BaseModel):
    """The team's coverage (GET /api/v1/accounts/{account_id}/coverage) changed."""

    covered: int
    connected: int
    mapped_only: int
    unmatched: int
    total: int
    changed_members: list[MemberCoverage] = Field(
        description="Members whose coverage changed (at most 50 listed)"
    )
    changed_members_total: int = Field(description="How many members changed in all")


class _EventBase(BaseModel):
    id: str = Field(description="Unique event id (evt_...): deduplicate deliveries with it")
    sequence: int = Field(description="Position in the feed: GET /api/v1/events?after=<sequence>")
    created_at: datetime
    account_id: str
    member_id: str | None = Field(
        default=None, description="The team member, for a member connection's event (else absent)"
    )


class ConnectionConnectedEvent(_EventBase):
    type: Literal["connection.connected"]
    data: ConnectedData


class ConnectionReconnectedEvent(_EventBase):
    type: Literal["connection.reconnected"]
    data: ReconnectedData


class ConnectionNeedsReauthEvent(_EventBase):
    type: Literal["connection.needs_reauth"]
    data: StatusData


class ConnectionPausedEvent(_EventBase):
    type: Literal["connection.paused"]
    data: StatusData


class ConnectionDisconnectedEvent(_EventBase):
    type: Literal["connection.disconnected"]
    data: DisconnectedData


class SyncFailedEvent(_EventBase):
    type: Literal["sync.failed"]
    data: SyncFailedData


class SyncCompletedEvent(_EventBase):
    """Opt-in: INTEGRATOR_EVENTS_SYNC_COMPLETED=true."""

    type: Literal["sync.completed"]
    data: SyncCompletedData


class LinksErrorsChangedEvent(_EventBase):
    type: Literal["links.errors_changed"]
    data: LinksErrorsChangedData


class CoverageChangedEvent(_EventBase):
    type: Literal["coverage.changed"]
    data: CoverageChangedData


IntegratorEvent = Annotated[
    ConnectionConnectedEvent
    | ConnectionReconnectedEvent
    | ConnectionNeedsReauthEvent
    | ConnectionPausedEvent
    | ConnectionDisconnectedEvent
    | SyncFailedEvent
    | SyncCompletedEvent
    | LinksErrorsChangedEvent
    | CoverageChangedEvent,
    Field(discriminator="type"),
]


class EventsQuery(Query):
    after: str = Field(
        default="0",
        pattern=r"^([0-9]{1,18}|evt_[0-9a-f]{24})$",
        description="The `next` of the previous page, or an event's sequence or id (evt_...)",
    )
    limit: int = Field(default=100, ge=1, le=500, description="Events per page")


class EventPage(BaseModel):
    data: list[IntegratorEvent] = Field(description="Oldest first")
    next: str = Field(description="Pass as ?after= to continue; the same value when nothing is new")
    has_more: bool = Field(description="More events are waiting after this page")
