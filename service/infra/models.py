"""Typed ORM models. Tokens are stored only as ciphertext (see service.infra.crypto)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
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


TZDateTime = UTCDateTime()


class Connection(Base):
    __tablename__ = "connections"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[str] = mapped_column(String(255), unique=True)
    status: Mapped[ConnectionStatus] = mapped_column(
        StrEnumType(ConnectionStatus, 32), default=ConnectionStatus.ACTIVE
    )
    status_reason: Mapped[str | None] = mapped_column(Text)

    close_user_id: Mapped[str | None] = mapped_column(String(255))
    close_user_name: Mapped[str | None] = mapped_column(String(255))
    close_user_email: Mapped[str | None] = mapped_column(String(320))
    close_org_id: Mapped[str | None] = mapped_column(String(255))
    close_org_name: Mapped[str | None] = mapped_column(String(255))

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
    def syncable(self) -> bool:
        """Only an active connection syncs (paused, needs_reauth and disconnected do not)."""
        return self.status == ConnectionStatus.ACTIVE

    def __repr__(self) -> str:  # never include token material
        return f"<Connection {self.id} account={self.account_id!r} status={self.status}>"


class SyncedLink(Base):
    __tablename__ = "synced_links"
    __table_args__ = (UniqueConstraint("connection_id", "source_id"),)

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


class SyncRun(Base):
    __tablename__ = "sync_runs"
    __table_args__ = (Index("ix_sync_runs_connection_id_id", "connection_id", "id"),)

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

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[str] = mapped_column(String(255), unique=True)
    account_id: Mapped[str] = mapped_column(String(255))
    event_type: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(TZDateTime, default=utcnow, index=True)


class ConnectSession(Base):
    __tablename__ = "connect_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(255), index=True)
    return_url: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(TZDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(TZDateTime)


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
