"""Typed ORM models. Tokens are stored only as ciphertext (see service.infra.crypto)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from service.infra.db import Base, StrEnumType, UTCDateTime, utcnow


class ConnectionStatus(StrEnum):
    ACTIVE = "active"
    NEEDS_REAUTH = "needs_reauth"
    PAUSED = "paused"  # the source said the account is gone (404); nothing is deleted
    DISCONNECTED = "disconnected"


class LinkState(StrEnum):
    PENDING = "pending"  # wanted in Close, not (yet) confirmed there
    SYNCED = "synced"
    ERROR = "error"  # invalid locally or rejected by Close; the other links still sync
    DELETING = "deleting"  # gone from the source, delete in Close not yet confirmed


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"  # finished, but some links failed or deletes were withheld
    FAILED = "failed"
    COALESCED = "coalesced"  # merged into a run that was already going to read newer state


class Trigger(StrEnum):
    CONNECT = "connect"
    SCHEDULE = "schedule"
    WEBHOOK = "webhook"
    MANUAL = "manual"
    CLI = "cli"
    RECONCILE = "reconcile"
    TEAM = "team"  # a member's connection changed: the admin's shared-link mappings follow


TZDateTime = UTCDateTime()


class Connection(Base):
    """One Close user's grant for one account: the account's admin connection (`member_id`
    NULL, at most one per account) or one team member's own connection."""

    __tablename__ = "connections"
    __table_args__ = (
        UniqueConstraint("account_id", "member_id"),
        # Connections by status (the dashboard and the gauges) as an index-only scan.
        Index("ix_connections_status", "status"),
        # NULLs are distinct in a unique constraint: this index makes the admin one of a kind.
        Index(
            "uq_connections_admin_account_id",
            "account_id",
            unique=True,
            sqlite_where=text("member_id IS NULL"),
            postgresql_where=text("member_id IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[str] = mapped_column(String(255))
    member_id: Mapped[str | None] = mapped_column(String(255))  # None: the admin connection
    status: Mapped[ConnectionStatus] = mapped_column(
        StrEnumType(ConnectionStatus, 32), default=ConnectionStatus.ACTIVE
    )
    status_reason: Mapped[str | None] = mapped_column(Text)

    close_user_id: Mapped[str | None] = mapped_column(String(255))
    close_user_name: Mapped[str | None] = mapped_column(String(255))
    close_user_email: Mapped[str | None] = mapped_column(String(320))
    close_org_id: Mapped[str | None] = mapped_column(String(255))
    close_org_name: Mapped[str | None] = mapped_column(String(255))
    # A member connection whose Close email differs from the member's: shown, not hidden.
    email_warning: Mapped[str | None] = mapped_column(Text)
    # The admin's Manage Customizations in its org, as /me/ said at the last sync (None: unknown).
    manage_customizations: Mapped[bool | None] = mapped_column(Boolean)

    access_token_enc: Mapped[str | None] = mapped_column(Text)
    refresh_token_enc: Mapped[str | None] = mapped_column(Text)
    token_expires_at: Mapped[datetime | None] = mapped_column(TZDateTime)
    # When to refresh ahead of expiry: the margin, capped at a quarter of the lifetime.
    token_refresh_at: Mapped[datetime | None] = mapped_column(TZDateTime)
    token_generation: Mapped[int] = mapped_column(Integer, default=0)

    source_etag: Mapped[str | None] = mapped_column(String(512))
    next_sync_at: Mapped[datetime | None] = mapped_column(TZDateTime, index=True)
    next_reconcile_at: Mapped[datetime | None] = mapped_column(TZDateTime)
    last_sync_at: Mapped[datetime | None] = mapped_column(TZDateTime)
    last_sync_status: Mapped[RunStatus | None] = mapped_column(StrEnumType(RunStatus, 32))
    last_sync_run_id: Mapped[int | None] = mapped_column(Integer)
    # A durable "this connection needs a sync": set in the same transaction that answers 202,
    # cleared (compare-and-clear on the timestamp) when a run starts reading the source. The
    # broker message is only a wake-up; the scheduler tick re-sends what a lost one missed.
    sync_requested_at: Mapped[datetime | None] = mapped_column(TZDateTime, index=True)
    sync_requested_trigger: Mapped[str | None] = mapped_column(String(32))
    sync_requested_reconcile: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default="0"
    )

    connected_at: Mapped[datetime | None] = mapped_column(TZDateTime)
    disconnected_at: Mapped[datetime | None] = mapped_column(TZDateTime)
    created_at: Mapped[datetime] = mapped_column(TZDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(TZDateTime, default=utcnow, onupdate=utcnow)

    links: Mapped[list[SyncedLink]] = relationship(
        back_populates="connection", cascade="all, delete-orphan", passive_deletes=True
    )

    @property
    def is_member(self) -> bool:
        return self.member_id is not None

    @property
    def syncable(self) -> bool:
        """Only an active connection syncs (paused, needs_reauth and disconnected do not)."""
        return self.status == ConnectionStatus.ACTIVE

    def __repr__(self) -> str:  # never include token material
        return f"<Connection {self.id} account={self.account_id!r} status={self.status}>"


class SyncedLink(Base):
    __tablename__ = "synced_links"
    __table_args__ = (
        UniqueConstraint("connection_id", "source_id"),
        # Links by state (dashboard, gauges) and the console's recent errors.
        Index("ix_synced_links_state_updated_at", "state", "updated_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    connection_id: Mapped[int] = mapped_column(
        ForeignKey("connections.id", ondelete="CASCADE"), index=True
    )
    source_id: Mapped[str] = mapped_column(String(255))
    name: Mapped[str | None] = mapped_column(Text)
    url: Mapped[str | None] = mapped_column(Text)
    content_hash: Mapped[str | None] = mapped_column(String(64))  # of what Close last accepted
    close_link_id: Mapped[str | None] = mapped_column(String(255))
    state: Mapped[LinkState] = mapped_column(StrEnumType(LinkState, 16), default=LinkState.PENDING)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_synced_at: Mapped[datetime | None] = mapped_column(TZDateTime)
    updated_at: Mapped[datetime] = mapped_column(TZDateTime, default=utcnow, onupdate=utcnow)

    connection: Mapped[Connection] = relationship(back_populates="links")

    @property
    def may_be_in_close(self) -> bool:
        """Close holds, or may hold, a link of ours for this row."""
        return self.content_hash is not None or self.state in (
            LinkState.PENDING,
            LinkState.DELETING,
        )


class TeamMember(Base):
    """The account's team as the source last listed it (`GET /accounts/{id}/members`)."""

    __tablename__ = "team_members"
    __table_args__ = (UniqueConstraint("account_id", "member_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[str] = mapped_column(String(255))
    member_id: Mapped[str] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(320))
    name: Mapped[str | None] = mapped_column(String(255))
    # The Close user of the org with this email, as the admin's last sync found it.
    close_user_id: Mapped[str | None] = mapped_column(String(255))
    close_user_name: Mapped[str | None] = mapped_column(String(255))


class SharedLink(Base):
    """A Close shared scheduling link we created for one managed event type (and so own)."""

    __tablename__ = "shared_links"
    __table_args__ = (UniqueConstraint("account_id", "event_type_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[str] = mapped_column(String(255))
    event_type_id: Mapped[str] = mapped_column(String(255))
    close_shared_id: Mapped[str | None] = mapped_column(String(255))
    name: Mapped[str | None] = mapped_column(Text)
    content_hash: Mapped[str | None] = mapped_column(String(64))  # of what Close last accepted
    last_error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(TZDateTime, default=utcnow, onupdate=utcnow)

    mappings: Mapped[list[SharedLinkMapping]] = relationship(
        back_populates="shared_link", cascade="all, delete-orphan", passive_deletes=True
    )


class SharedLinkMapping(Base):
    """A mapping we made of one Close user on one of our shared links (Close cannot list them
    back, so this record is the truth of what we did)."""

    __tablename__ = "shared_link_mappings"
    __table_args__ = (UniqueConstraint("shared_link_id", "close_user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    shared_link_id: Mapped[int] = mapped_column(
        ForeignKey("shared_links.id", ondelete="CASCADE"), index=True
    )
    close_user_id: Mapped[str] = mapped_column(String(255))
    member_id: Mapped[str] = mapped_column(String(255))
    target_kind: Mapped[str] = mapped_column(String(32))  # user_scheduling_link_id | url
    target_value: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(TZDateTime, default=utcnow, onupdate=utcnow)

    shared_link: Mapped[SharedLink] = relationship(back_populates="mappings")


class SyncRun(Base):
    __tablename__ = "sync_runs"
    __table_args__ = (
        Index("ix_sync_runs_connection_id_id", "connection_id", "id"),
        # The dashboard's polling (every 2 s): running and queued runs, the oldest queued.
        Index("ix_sync_runs_status_queued_at", "status", "queued_at"),
        # ... and the runs of the last hour.
        Index("ix_sync_runs_queued_at", "queued_at"),
    )

    # Not a column: set by the engine when the run ended with work still owed (a temporary
    # failure: Close, the source or the coordinator was away), so the runner puts the sync
    # request back and the scheduler re-runs it instead of waiting for the next interval.
    retry_owed = False

    id: Mapped[int] = mapped_column(primary_key=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"))
    trigger: Mapped[Trigger] = mapped_column(StrEnumType(Trigger, 32))
    status: Mapped[RunStatus] = mapped_column(StrEnumType(RunStatus, 32), default=RunStatus.QUEUED)
    queued_at: Mapped[datetime] = mapped_column(TZDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(TZDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(TZDateTime)
    created: Mapped[int] = mapped_column(Integer, default=0)
    updated: Mapped[int] = mapped_column(Integer, default=0)
    deleted: Mapped[int] = mapped_column(Integer, default=0)
    unchanged: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int] = mapped_column(Integer, default=0)
    progress_done: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"
    # The flood limit counts an account's deliveries of the last minute.
    __table_args__ = (
        Index("ix_webhook_deliveries_account_id_received_at", "account_id", "received_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[str] = mapped_column(String(255), unique=True)
    account_id: Mapped[str] = mapped_column(String(255))
    event_type: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(TZDateTime, default=utcnow, index=True)


class ConnectSession(Base):
    __tablename__ = "connect_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(255), index=True)
    member_id: Mapped[str | None] = mapped_column(String(255))  # a member's personal link
    return_url: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(TZDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(TZDateTime)
    # Single use: set when its callback completes; the link then works only as a way back to
    # the status view, in the browser that completed it (through its manage session).
    completed_at: Mapped[datetime | None] = mapped_column(TZDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(TZDateTime)  # DELETE by the integrator


class ManageSession(Base):
    """A browser's access to one connection's status view (Sync now, Disconnect), separate from
    the single-use connect link. Granted to the browser that completed a connect, or minted as a
    one-time manage link by the integrator (API or `linksync connect-link --manage`), which the
    first browser to open it claims. Revocable one by one; all of a connection's sessions die
    when it is disconnected (unless re-granted to the browser that disconnected) or reconnected
    elsewhere."""

    __tablename__ = "manage_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    connection_id: Mapped[int] = mapped_column(
        ForeignKey("connections.id", ondelete="CASCADE"), index=True
    )
    browser_binding: Mapped[str | None] = mapped_column(String(128))  # None until claimed
    created_at: Mapped[datetime] = mapped_column(TZDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(TZDateTime)
    claimed_at: Mapped[datetime | None] = mapped_column(TZDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(TZDateTime)


class OAuthState(Base):
    """A pending authorization: one random state, bound to a browser session and a connect session."""

    __tablename__ = "oauth_states"

    state: Mapped[str] = mapped_column(String(128), primary_key=True)
    connect_session_id: Mapped[str] = mapped_column(
        ForeignKey("connect_sessions.id", ondelete="CASCADE")
    )
    browser_binding: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(TZDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(TZDateTime)
    used_at: Mapped[datetime | None] = mapped_column(TZDateTime)


class CoordinationKey(Base):
    """Locks and flags when no Redis is configured (the embedded default)."""

    __tablename__ = "coordination_keys"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str] = mapped_column(String(255))
    expires_at: Mapped[datetime | None] = mapped_column(TZDateTime)


# Events to the integrator (the outbox; see service.infra.outbox) ------------------------


class DeliveryState(StrEnum):
    PENDING = "pending"  # not yet delivered (or waiting for its next attempt)
    DELIVERED = "delivered"
    FAILED = "failed"  # given up after the retry window; the next event proceeds


class Event(Base):
    """One event for the integrator, written in the transaction of the change it reports.
    `id` is the feed's cursor; `uid` is the public id (`evt_...`)."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_delivery_state_connection_id_id", "delivery_state", "connection_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    uid: Mapped[str] = mapped_column(String(40), unique=True)
    type: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(TZDateTime, default=utcnow, index=True)
    account_id: Mapped[str] = mapped_column(String(255))
    member_id: Mapped[str | None] = mapped_column(String(255))
    connection_id: Mapped[int | None] = mapped_column(
        ForeignKey("connections.id", ondelete="CASCADE"), index=True
    )
    data: Mapped[dict[str, Any]] = mapped_column(JSON)

    delivery_state: Mapped[DeliveryState] = mapped_column(
        StrEnumType(DeliveryState, 16), default=DeliveryState.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(TZDateTime)
    give_up_at: Mapped[datetime | None] = mapped_column(TZDateTime)  # set at the first attempt
    delivered_at: Mapped[datetime | None] = mapped_column(TZDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)


class EventAttempt(Base):
    """One delivery attempt of an event to INTEGRATOR_WEBHOOK_URL."""

    __tablename__ = "event_attempts"

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True)
    attempted_at: Mapped[datetime] = mapped_column(TZDateTime, default=utcnow)
    outcome: Mapped[str] = mapped_column(
        String(16)
    )  # delivered | failed (a retry follows) | gave_up
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)


class ReportedLinkError(Base):
    """The links last reported failing to the integrator (links.errors_changed compares the
    links failing now with these)."""

    __tablename__ = "reported_link_errors"

    connection_id: Mapped[int] = mapped_column(
        ForeignKey("connections.id", ondelete="CASCADE"), primary_key=True
    )
    source_id: Mapped[str] = mapped_column(String(255), primary_key=True)
