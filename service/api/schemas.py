"""Request, query and response bodies of the integrator API and the webhook. The views parse
with these models and serialize through them, and the OpenAPI document is built from them, so
the document cannot drift from what the code accepts and answers."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool

from service.connections.sessions import ACCOUNT_ID_MAX, validate_account_id
from service.errors import ValidationFailed

# What validate_account_id accepts, for the document (ECMA-262 regex, as JSON Schema uses):
# not blank, not "." or "..", no slashes, no control characters.
ACCOUNT_ID_PATTERN = r"^(?!\s*$)(?!\.{1,2}$)[^/\\\x00-\x1f\x7f]+$"
ACCOUNT_ID_SCHEMA: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": ACCOUNT_ID_MAX,
    "pattern": ACCOUNT_ID_PATTERN,
    "description": "The integrator's id of a user or an org",
}
CONNECT_TOKEN_SCHEMA: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": 200,
    "pattern": r"^[A-Za-z0-9_.-]+$",
    "description": "The token of a connect session (the last segment of its connect_url)",
}
DB_INT_MAX = 2**31 - 1  # our ids are 32-bit integers on PostgreSQL (INTEGER)
RUN_ID_MAX = DB_INT_MAX
LINK_ID_MAX = DB_INT_MAX  # a cursor is a link id
# Printable text only: a NUL is refused by PostgreSQL (a 500 if it reached the insert), and
# control characters in an id end up in logs and the admin pages.
PRINTABLE_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]+$"


def _link_cursor(value: str) -> str:
    if int(value) > LINK_ID_MAX:
        raise ValueError(f"must be at most {LINK_ID_MAX}")
    return value


def _account_id(value: str) -> str:
    try:
        return validate_account_id(value)
    except ValidationFailed as exc:
        raise ValueError(exc.message.removeprefix("account_id ")) from None


AccountId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=ACCOUNT_ID_MAX,
        description="The integrator's id of a user or an org",
        json_schema_extra={"pattern": ACCOUNT_ID_PATTERN},
    ),
    AfterValidator(_account_id),
]


class Strict(BaseModel):
    """Request bodies: unknown fields and wrong types are refused, never coerced."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Query(BaseModel):
    """Query strings: every value arrives as text, so numbers are parsed (lax), but unknown
    parameters are refused (a typo such as ?keep_link=true must not delete links)."""

    model_config = ConfigDict(extra="forbid")


# Requests -------------------------------------------------------------------------------


class ConnectSessionIn(Strict):
    account_id: AccountId
    member_id: AccountId | None = Field(
        default=None,
        description="A team member's id at the source: the link connects that member's own "
        "Close user (in the admin connection's Close organization)",
    )
    return_url: str | None = Field(
        default=None,
        max_length=2048,
        description="Where to send the admin afterwards; its origin must be allowed",
        json_schema_extra={"format": "uri"},
    )


class LinksQuery(Query):
    limit: int = Field(default=100, ge=1, le=500, description="Links per page")
    cursor: Annotated[
        str,
        Field(
            pattern=rf"^[0-9]{{1,{len(str(LINK_ID_MAX))}}}$",
            description=f"next_cursor of the previous page (an integer from 0 to {LINK_ID_MAX})",
        ),
        AfterValidator(_link_cursor),
    ] = "0"


class DisconnectQuery(Query):
    keep_links: Literal["true", "false", "1", "0"] = Field(
        default="false", description="true leaves our links in Close"
    )


class WebhookIn(BaseModel):
    """Extra fields are ignored (not refused): the integrator may add fields to its events."""

    model_config = ConfigDict(strict=True)

    id: str = Field(
        min_length=1,
        max_length=255,
        pattern=PRINTABLE_PATTERN,
        description="Unique event id (de-duplicated); printable text, no control characters",
    )
    type: Literal["event_types.changed", "members.changed"] = Field(
        description="Both resync the whole account (every connection of it), coalesced"
    )
    account_id: AccountId


# Responses ------------------------------------------------------------------------------


class ConnectSessionOut(BaseModel):
    token: str
    connect_url: str = Field(
        description="PUBLIC_URL/connect/<token>, single use. Send the admin's browser there, "
        "or open it with the connect widget: LinkSync.connect({url: connect_url}) from "
        "PUBLIC_URL/static/connect.js, which adds ?widget_origin=<your page's origin> (one of "
        "RETURN_URL_ALLOWED_ORIGINS) and resolves with the outcome"
    )
    expires_at: datetime


class ManageLinkOut(BaseModel):
    url: str = Field(description="PUBLIC_URL/manage/<token>: one-time, for one browser")
    expires_at: datetime = Field(
        description="Open it before this; the browser then keeps the status view for "
        "MANAGE_SESSION_TTL_SECONDS"
    )


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


class MemberConnectionOut(ConnectionOut):
    """A team member's own connection."""

    member_id: str
    email_warning: str | None = Field(
        description="Set when the Close user's email differs from the member's"
    )


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
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null at end")


class SyncIn(BaseModel):
    """Optional body of POST /accounts/{account_id}/sync (an empty body is a plain resync)."""

    model_config = ConfigDict(extra="forbid")

    reconcile: StrictBool = Field(
        default=False,
        description="Also list the user's links in Close and repair drift (trigger reconcile)",
    )


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


class WebhookOut(BaseModel):
    status: Literal["accepted", "duplicate"]


class OpenAPIDocument(BaseModel):
    model_config = ConfigDict(extra="allow")

    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]
    components: dict[str, Any]


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorOut(BaseModel):
    error: ErrorDetail


# Teams ----------------------------------------------------------------------------------


class CoverageUser(BaseModel):
    id: str
    name: str | None


class CoverageConnection(BaseModel):
    status: Literal["active", "needs_reauth", "paused", "disconnected"]
    via: Literal["admin", "member"] = Field(
        description="admin: the admin is this member (same email) and syncs their links"
    )
    email_warning: str | None


class CoverageMapping(BaseModel):
    event_type_id: str
    shared_link: str | None
    target: Literal["user_link", "url"]
    url: str | None


class CoverageMember(BaseModel):
    member_id: str
    email: str | None
    name: str | None
    close_user: CoverageUser | None = Field(description="Matched by email; null when none")
    covered: bool
    reason: str | None = Field(description="Why not matched or not covered")
    connection: CoverageConnection | None
    links: int = Field(description="User links of the member's connection")
    shared_mappings: list[CoverageMapping]


class CoverageTotals(BaseModel):
    covered: int
    connected: int
    mapped_only: int
    unmatched: int
    total: int


class SharedLinksAvailability(BaseModel):
    available: bool
    reason: str | None


class CoverageOut(BaseModel):
    account_id: str
    members: list[CoverageMember]
    totals: CoverageTotals = Field(description='"covered N of M": totals.covered of totals.total')
    shared_links: SharedLinksAvailability
