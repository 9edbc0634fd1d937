"""A team's coverage, computed from our tables (contract: product.md, "Coverage"): who of the
account's members has links in Close. The read side (`queries.coverage`: the API, the CLI, the
status page and the console) and the `coverage.changed` events share this one computation, so
the event's totals are what the coverage API answers right after the change.

Plain functions of a session, a constant number of queries whatever the team's size."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.infra import outbox
from service.infra.models import (
    Connection,
    Event,
    SharedLink,
    SharedLinkMapping,
    SyncedLink,
    TeamMember,
)

NOT_SYNCED_YET = "the admin connection has not matched the team against Close yet"
CHANGED_MEMBERS_LIMIT = 50  # members listed in one coverage.changed


class Change:
    """What happened to a member, as `coverage.changed` says it."""

    CONNECTED = "connected"  # their own connection became active
    DISCONNECTED = "disconnected"  # their own connection ended
    MATCHED = "matched"  # their email now matches a Close user of the org
    UNMATCHED = "unmatched"  # it no longer does


def admin_connection(session: Session, account_id: str) -> Connection | None:
    return session.scalar(
        select(Connection).where(
            Connection.account_id == account_id, Connection.member_id.is_(None)
        )
    )


def compute(session: Session, admin: Connection) -> dict[str, Any]:
    """Per member the email, the matched Close user or why none, the member connection, user
    links and shared mappings; totals; whether shared links are available."""
    account_id = admin.account_id
    members = session.scalars(
        select(TeamMember).where(TeamMember.account_id == account_id).order_by(TeamMember.id)
    ).all()
    own = {
        c.member_id: c
        for c in session.scalars(
            select(Connection)
            .where(Connection.account_id == account_id, Connection.member_id.is_not(None))
            .order_by(Connection.member_id)
        )
    }
    admin_email = (admin.close_user_email or "").strip().casefold()
    counts = dict(
        session.execute(
            select(SyncedLink.connection_id, func.count())
            .join(Connection, Connection.id == SyncedLink.connection_id)
            .where(Connection.account_id == account_id)
            .group_by(SyncedLink.connection_id)
        ).all()
    )
    mapped: dict[str, list[dict[str, Any]]] = {}
    for mapping, event_type_id, name in session.execute(
        select(SharedLinkMapping, SharedLink.event_type_id, SharedLink.name)
        .join(SharedLink, SharedLink.id == SharedLinkMapping.shared_link_id)
        .where(SharedLink.account_id == account_id)
        .order_by(SharedLink.event_type_id)
    ):
        mapped.setdefault(mapping.member_id, []).append(
            {
                "event_type_id": event_type_id,
                "shared_link": name,
                "target": "user_link" if mapping.target_kind != "url" else "url",
                "url": mapping.target_value if mapping.target_kind == "url" else None,
            }
        )
    rows = []
    totals = {"covered": 0, "connected": 0, "mapped_only": 0, "unmatched": 0}
    admin_member_taken = False
    for member in members:
        connection = own.get(member.member_id)
        via_admin = (
            not admin_member_taken
            and bool(admin_email)
            and (member.email or "").strip().casefold() == admin_email
        )
        admin_member_taken = admin_member_taken or via_admin
        carrier = admin if via_admin else connection
        user_id = member.close_user_id or (carrier.close_user_id if carrier else None)
        user_name = member.close_user_name or (carrier.close_user_name if carrier else None)
        connected = carrier is not None and carrier.status == "active"
        mappings = mapped.get(member.member_id, [])
        reason = None
        if user_id is None:
            reason = (
                "no email in the source"
                if not member.email
                else f"{member.email.strip()} is not a user of the Close organization"
                f" {admin.close_org_name or admin.close_org_id or ''}".rstrip()
                if admin.last_sync_run_id
                else NOT_SYNCED_YET
            )
        elif not connected and not mappings:
            reason = "not connected, and no shared link maps them"
        covered = user_id is not None and (connected or bool(mappings))
        if user_id is None:
            totals["unmatched"] += 1
        if covered:
            totals["covered"] += 1
            totals["connected" if connected else "mapped_only"] += 1
        rows.append(
            {
                "member_id": member.member_id,
                "email": member.email,
                "name": member.name,
                "close_user": {"id": user_id, "name": user_name} if user_id else None,
                "covered": covered,
                "reason": reason,
                "connection": {
                    "status": carrier.status,
                    "via": "admin" if via_admin else "member",
                    "email_warning": carrier.email_warning,
                }
                if carrier is not None
                else None,
                "links": int(counts.get(carrier.id, 0)) if carrier else 0,
                "shared_mappings": mappings,
            }
        )
    if admin.manage_customizations is False:
        shared: dict[str, Any] = {
            "available": False,
            "reason": "The connected Close user lacks the Manage Customizations permission in "
            f"{admin.close_org_name or 'this organization'}, so shared links are skipped.",
        }
    else:
        shared = {"available": admin.manage_customizations is True, "reason": None}
        if admin.manage_customizations is None:
            shared["reason"] = "not known until the admin connection's next sync"
    return {
        "account_id": account_id,
        "members": rows,
        "totals": {**totals, "total": len(members)},
        "shared_links": shared,
    }


def record_changed(
    session: Session, account_id: str, changes: Mapping[str, str], *, connection_id: int | None
) -> Event | None:
    """Add `coverage.changed` to the caller's transaction (after the change is flushed): the
    totals as they are now, and each changed member with what happened and their coverage.
    The envelope names the member when only one changed. None without a team or an admin."""
    if not changes:
        return None
    session.flush()
    admin = admin_connection(session, account_id)
    if admin is None:
        return None
    report = compute(session, admin)
    by_member = {row["member_id"]: row for row in report["members"]}
    listed = sorted(changes.items())[:CHANGED_MEMBERS_LIMIT]
    data = {
        **report["totals"],
        "changed_members": [
            {
                "member_id": member_id,
                "change": change,
                "covered": bool(by_member.get(member_id, {}).get("covered")),
                "reason": by_member.get(member_id, {}).get("reason"),
            }
            for member_id, change in listed
        ],
        "changed_members_total": len(changes),
    }
    return outbox.record(
        session,
        outbox.EventType.COVERAGE_CHANGED,
        account_id=account_id,
        connection_id=connection_id,
        member_id=next(iter(changes)) if len(changes) == 1 else None,
        data=data,
    )
