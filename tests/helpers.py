"""Small helpers shared by the integration tests (no fakes of our own code here)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select

from service.close.oauth import TokenSet
from service.close.tokens import store_tokens
from service.infra.db import utcnow
from service.infra.models import Connection, ConnectionStatus, SyncedLink, SyncRun
from service.services import Services
from service.settings import SANDBOX_CLIENT_ID, Settings

INTEGRATION_WRITE = (
    "POST /scheduling_link/integration/",
    "DELETE /scheduling_link/integration/{source_id}/",
)


def event_type(n: int, account: str, **overrides: Any) -> dict[str, Any]:
    item = {
        "id": f"evt_{n}",
        "name": f"Meeting type {n}",
        "url": f"https://book.example.com/{account}/meeting-{n}",
        "description": f"Description of meeting {n}",
        "duration_minutes": 15 + (n % 4) * 15,
        "kind": "One-on-one" if n % 2 else "Group",
        "active": True,
    }
    item.update(overrides)
    return item


def connect_directly(
    svc: Services,
    sandbox: Any,
    account_id: str,
    *,
    user_id: str = "user_jane",
    org_id: str = "orga_acme",
    member_id: str | None = None,
) -> int:
    """A connection as the OAuth callback would leave it, with tokens the sandbox issued."""
    data = sandbox.state.issue_tokens(SANDBOX_CLIENT_ID, user_id, org_id)
    tokens = TokenSet.from_response(data)
    name = user_id.removeprefix("user_")
    with svc.db.session() as session:
        connection = Connection(
            account_id=account_id,
            member_id=member_id,
            status=ConnectionStatus.ACTIVE,
            close_user_id=user_id,
            close_org_id=org_id,
            close_user_name="Jane Doe" if name == "jane" else name.title(),
            close_user_email=f"{name}@acme.com",
            close_org_name="Acme Inc.",
            connected_at=utcnow(),
            next_sync_at=utcnow() + timedelta(seconds=svc.settings.SYNC_INTERVAL_SECONDS),
        )
        store_tokens(connection, tokens, svc.cipher)
        session.add(connection)
        session.flush()
        return connection.id


def our_links(sandbox: Any, user_id: str = "user_jane") -> dict[str, dict[str, Any]]:
    """THIRD_PARTY links of our OAuth app in the sandbox, by source_id."""
    return {
        link["source_id"]: link
        for link in sandbox.state.links(user_id=user_id)
        if link["source"] == "THIRD_PARTY" and link["oauth_client_id"] == SANDBOX_CLIENT_ID
    }


def writes(sandbox: Any) -> int:
    return sum(sandbox.state.calls[key] for key in INTEGRATION_WRITE)


def close_api_calls(sandbox: Any) -> int:
    return sum(
        n
        for key, n in sandbox.state.calls.items()
        if key.split(" ")[0] in ("GET", "POST", "PUT", "DELETE")
    )


def expected_fields(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "source_id": item["id"],
        "name": item["name"],
        "url": item["url"],
        "description": item["description"],
        "source_type": item["kind"],
        "duration_in_minutes": item["duration_minutes"],
    }


def worker_alive(settings: Settings) -> None:
    """Record a worker heartbeat as a running worker does (what `linksync doctor` reads)."""
    from service.infra import heartbeats

    svc = Services(settings, enqueue=lambda *_: None)
    try:
        heartbeats.record(svc.coordinator, "test-worker")
    finally:
        svc.close()


def sync(svc: Services, connection_id: int, **kwargs: Any) -> SyncRun:
    """Run a manual sync in the foreground (as `linksync sync` does); return its last run."""
    from service.sync.runner import run_sync

    run_ids = run_sync(svc, connection_id, trigger="manual", **kwargs)
    with svc.db.session() as session:
        run = session.get(SyncRun, run_ids[-1])
        assert run is not None
        return run


def link_rows(svc: Services, connection_id: int) -> dict[str, SyncedLink]:
    """The connection's link rows by source id."""
    with svc.db.session() as session:
        rows = session.scalars(select(SyncedLink).where(SyncedLink.connection_id == connection_id))
        return {row.source_id: row for row in rows}
