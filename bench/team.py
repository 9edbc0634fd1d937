"""Stack helpers for the team benchmark (bench.run team_org): an org of members in the
sandbox, a team source (roster, personal and managed event types), and the admin's and every
member's connection created directly with sandbox-issued tokens."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import insert, select

from bench.stack import Stack
from service.infra.crypto import TokenCipher
from service.infra.db import utcnow
from service.infra.models import Connection, ConnectionStatus
from service.settings import SANDBOX_CLIENT_ID

ORG = "o_team"
ADMIN_USER = "u_team_admin"


def member_ids(n: int) -> list[str]:
    return [f"m{i:04d}" for i in range(n)]


def team_source(
    account: str, members: int, personal_each: int, managed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(event types, roster): `personal_each` personal types per member and `managed` types
    assigned to everyone."""
    ids = member_ids(members)
    base = f"https://book.example.com/{account}"
    items: list[dict[str, Any]] = []
    for mid in ids:
        for k in range(personal_each):
            items.append(
                {
                    "id": f"p{k}-{mid}",
                    "name": f"{mid} meeting {k}",
                    "url": f"{base}/{mid}/p{k}",
                    "duration_minutes": 30,
                    "owner_id": mid,
                }
            )
    for k in range(managed):
        items.append(
            {
                "id": f"team{k}",
                "name": f"Team meeting {k}",
                "description": f"Team template {k}",
                "url": f"{base}/team{k}",
                "duration_minutes": 30,
                "managed": True,
                "assignments": [{"member_id": mid, "url": f"{base}/{mid}/team{k}"} for mid in ids],
            }
        )
    roster = [{"id": mid, "email": f"{mid}@team.example", "name": f"Member {mid}"} for mid in ids]
    return items, roster


def create_team_connections(s: Stack, account: str, members: int) -> tuple[int, list[int]]:
    """The org in the sandbox (the admin may manage customizations), then the admin's and
    each member's connection. Returns (admin connection id, member connection ids)."""
    ids = member_ids(members)
    s.sandbox(
        "/_sandbox/users",
        {
            "orgs": [{"id": ORG, "name": "Team Org"}],
            "users": [
                {
                    "id": ADMIN_USER,
                    "email": "admin@team.example",
                    "organizations": [ORG],
                    "can_manage_customizations": True,
                },
                *(
                    {"id": f"u_{mid}", "email": f"{mid}@team.example", "organizations": [ORG]}
                    for mid in ids
                ),
            ],
        },
    )
    cipher = TokenCipher(s.settings.TOKEN_ENCRYPTION_KEYS)
    now = utcnow()
    rows = []
    for member, user, email in [(None, ADMIN_USER, "admin@team.example")] + [
        (mid, f"u_{mid}", f"{mid}@team.example") for mid in ids
    ]:
        tokens = s.sandbox(
            "/_sandbox/issue-tokens",
            {"client_id": SANDBOX_CLIENT_ID, "user_id": user, "organization_id": ORG},
        )
        expires = now + timedelta(seconds=float(tokens["expires_in"]))
        rows.append(
            {
                "account_id": account,
                "member_id": member,
                "status": ConnectionStatus.ACTIVE,
                "close_user_id": user,
                "close_user_email": email,
                "close_org_id": ORG,
                "close_org_name": "Team Org",
                "access_token_enc": cipher.encrypt(tokens["access_token"]),
                "refresh_token_enc": cipher.encrypt(tokens["refresh_token"]),
                "token_expires_at": expires,
                "token_refresh_at": expires - timedelta(seconds=120),
                "token_generation": 1,
                "next_sync_at": now + timedelta(days=1),
                "next_reconcile_at": now + timedelta(days=1),
                "connected_at": now,
                "created_at": now,
                "updated_at": now,
            }
        )
    assert s.db is not None
    with s.db.session() as session:
        session.execute(insert(Connection), rows)
        found = session.execute(
            select(Connection.member_id, Connection.id).where(Connection.account_id == account)
        ).all()
    by_member = dict(found)
    return by_member[None], [by_member[mid] for mid in ids]


def write_team_source(
    s: Stack, account: str, items: list[dict[str, Any]], roster: list[dict[str, Any]]
) -> None:
    """Replace the source's data with this one team account (roster included)."""
    import json
    import os
    import time

    tmp = s.source_file.with_suffix(".tmp")
    tmp.write_text(json.dumps({"accounts": {account: items}, "members": {account: roster}}))
    os.replace(tmp, s.source_file)
    time.sleep(0.05)


SHARED_WRITES = (
    "POST /shared_scheduling_link/",
    "PUT /shared_scheduling_link/{shared_id}/",
    "DELETE /shared_scheduling_link/{shared_id}/",
    "POST /shared_scheduling_link_association/",
    "POST /shared_scheduling_link_association/unmap/",
)


def team_writes(calls: dict[str, int]) -> int:
    """Close writes of a team: user links (upserts and deletes) and shared links/mappings."""
    return (
        calls.get("POST /scheduling_link/integration/", 0)
        + calls.get("DELETE /scheduling_link/integration/{source_id}/", 0)
        + sum(calls.get(key, 0) for key in SHARED_WRITES)
    )


def mapped_to_user_links(s: Stack, account: str) -> int:
    from service.infra.models import SharedLink, SharedLinkMapping

    assert s.db is not None
    with s.db.session() as session:
        return len(
            session.scalars(
                select(SharedLinkMapping.id)
                .join(SharedLink, SharedLink.id == SharedLinkMapping.shared_link_id)
                .where(
                    SharedLink.account_id == account,
                    SharedLinkMapping.target_kind == "user_scheduling_link_id",
                )
            ).all()
        )


def active_runs(s: Stack) -> int:
    from service.infra.models import RunStatus, SyncRun

    assert s.db is not None
    with s.db.session() as session:
        return len(
            session.scalars(
                select(SyncRun.id).where(SyncRun.status.in_([RunStatus.QUEUED, RunStatus.RUNNING]))
            ).all()
        )
