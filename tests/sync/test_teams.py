"""The team round trip against the real sandbox and source over HTTP, on SQLite and on
PostgreSQL + Redis: an admin and two members connect, one member does not, a managed type is
renamed and reassigned, a member leaves the roster, a member's grant is revoked; shared links
and mappings follow, a no-change resync writes nothing, foreign shared links stay."""

from __future__ import annotations

from typing import Any

import requests
from sqlalchemy import select

from service.infra.models import Connection, ConnectionStatus, SyncRun
from service.services import Services
from service.settings import SANDBOX_CLIENT_ID
from service.sync.runner import run_sync
from tests.conftest import new_account
from tests.helpers import connect_directly, our_links

MEMBERS = [
    {"id": "m_jane", "email": "Jane@Acme.com ", "name": "Jane Doe"},  # the admin, by email
    {"id": "m_bob", "email": "bob@acme.com", "name": "Bob Brown"},
    {"id": "m_carol", "email": "carol@acme.com", "name": "Carol White"},
    {"id": "m_dave", "email": "dave@acme.com", "name": "Dave Green"},  # never connects
    {"id": "m_zoe", "email": "zoe@example.com", "name": "Zoe Quinn"},  # not in the Close org
]
SHARED_WRITES = (
    "POST /shared_scheduling_link/",
    "PUT /shared_scheduling_link/{shared_id}/",
    "DELETE /shared_scheduling_link/{shared_id}/",
    "POST /shared_scheduling_link_association/",
    "POST /shared_scheduling_link_association/unmap/",
    "POST /scheduling_link/integration/",
    "DELETE /scheduling_link/integration/{source_id}/",
)


def managed(et_id: str, name: str, account: str, members: list[str]) -> dict[str, Any]:
    return {
        "id": et_id,
        "name": name,
        "url": f"https://book.example.com/{account}/team/{et_id}",
        "description": f"{name} with your rep",
        "duration_minutes": 30,
        "kind": "Round robin",
        "managed": True,
        "assignments": [
            {"member_id": m, "url": f"https://book.example.com/{account}/{m}/{et_id}"}
            for m in members
        ],
    }


def personal(et_id: str, owner: str | None, account: str) -> dict[str, Any]:
    item = {
        "id": et_id,
        "name": f"Meeting {et_id}",
        "url": f"https://book.example.com/{account}/{et_id}",
        "duration_minutes": 15,
    }
    if owner:
        item["owner_id"] = owner
    return item


def writes(sandbox: Any) -> int:
    return sum(sandbox.state.calls[key] for key in SHARED_WRITES)


def sync(svc: Services, connection_id: int) -> SyncRun:
    run_ids = run_sync(svc, connection_id, trigger="manual")
    with svc.db.session() as session:
        run = session.get(SyncRun, run_ids[-1])
        assert run is not None
        session.expunge(run)
        return run


def shared_by_name(sandbox: Any) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in sandbox.state.team("orga_acme")["shared_links"]}


def targets(shared: dict[str, Any]) -> dict[str, str]:
    return {
        a["user_id"]: a.get("user_scheduling_link_id") or a["url"] for a in shared["associations"]
    }


def test_team_round_trip(services: Services, sandbox: Any, source: Any) -> None:
    account = new_account()
    items = [
        personal("acct1", None, account),
        personal("jane1", "m_jane", account),
        personal("bob1", "m_bob", account),
        managed("disc", "Discovery call", account, ["m_jane", "m_bob", "m_carol", "m_zoe"]),
        managed("price", "Pricing review", account, ["m_carol", "m_dave"]),
    ]
    source.store.put_all(account, items)
    source.store.put_members(account, MEMBERS)
    # A shared link someone made by hand in Close: not recorded by us, never touched.
    jane_token = sandbox.state.issue_tokens(SANDBOX_CLIENT_ID, "user_jane", "orga_acme")
    api = f"{sandbox.url}/api/v1"
    auth = {"Authorization": f"Bearer {jane_token['access_token']}"}
    foreign = requests.post(
        f"{api}/shared_scheduling_link/", json={"name": "Theirs"}, headers=auth, timeout=5
    ).json()

    admin = connect_directly(services, sandbox, account)
    bob = connect_directly(services, sandbox, account, user_id="user_bob", member_id="m_bob")
    carol = connect_directly(services, sandbox, account, user_id="user_carol", member_id="m_carol")
    for cid in (bob, carol, admin):
        assert sync(services, cid).status == "succeeded"

    assert set(our_links(sandbox, "user_jane")) == {"acct1", "jane1", "disc:m_jane"}
    assert set(our_links(sandbox, "user_bob")) == {"bob1", "disc:m_bob"}
    assert set(our_links(sandbox, "user_carol")) == {"disc:m_carol", "price:m_carol"}
    bob_disc = our_links(sandbox, "user_bob")["disc:m_bob"]
    assert bob_disc["url"] == f"https://book.example.com/{account}/m_bob/disc"
    shared = shared_by_name(sandbox)
    assert set(shared) == {"Discovery call", "Pricing review", "Theirs"}
    assert targets(shared["Discovery call"]) == {
        "user_jane": our_links(sandbox, "user_jane")["disc:m_jane"]["id"],
        "user_bob": bob_disc["id"],
        "user_carol": our_links(sandbox, "user_carol")["disc:m_carol"]["id"],
    }  # Zoe is not in the Close org: not mapped
    assert targets(shared["Pricing review"]) == {
        "user_carol": our_links(sandbox, "user_carol")["price:m_carol"]["id"],
        "user_dave": f"https://book.example.com/{account}/m_dave/price",  # not connected: url
    }
    # A mapping to a member's own link is made with that member's token (Close allows the
    # owner), so a team's mappings do not all queue on the admin's per-token limit; the
    # admin maps its own user and the URL targets.
    mapped = "POST /shared_scheduling_link_association/"
    assert {
        user: sandbox.state.calls[f"by:{user} {mapped}"]
        for user in ("user_jane", "user_bob", "user_carol")
    } == {"user_jane": 2, "user_bob": 1, "user_carol": 2}

    # No change anywhere: zero writes to Close from every connection.
    before = writes(sandbox)
    for cid in (admin, bob, carol):
        assert sync(services, cid).status == "succeeded"
    assert writes(sandbox) == before

    # Rename Discovery and reassign it: Bob off, Dave on.
    source.store.update(
        account,
        "disc",
        **{
            k: v
            for k, v in managed(
                "disc", "Discovery session", account, ["m_jane", "m_carol", "m_zoe", "m_dave"]
            ).items()
            if k in ("name", "assignments")
        },
    )
    for cid in (bob, carol, admin):
        sync(services, cid)
    shared = shared_by_name(sandbox)
    assert "Discovery call" not in shared and "Discovery session" in shared
    disc = targets(shared["Discovery session"])
    assert "user_bob" not in disc and set(our_links(sandbox, "user_bob")) == {"bob1"}
    assert disc["user_dave"] == f"https://book.example.com/{account}/m_dave/disc"

    # Carol leaves the team: her links go, and so do her mappings.
    source.store.put_members(account, [m for m in MEMBERS if m["id"] != "m_carol"])
    for cid in (carol, admin):
        sync(services, cid)
    assert our_links(sandbox, "user_carol") == {}
    shared = shared_by_name(sandbox)
    assert "user_carol" not in targets(shared["Discovery session"])
    assert targets(shared["Pricing review"]) == {
        "user_dave": f"https://book.example.com/{account}/m_dave/price"
    }

    # Bob revokes the app in Close: only Bob's connection needs re-authorization.
    sandbox.state.revoke_grant("user_bob", SANDBOX_CLIENT_ID)
    source.store.update(account, "bob1", name="Bob's new meeting")  # so Bob's run calls Close
    assert sync(services, bob).status == "failed"
    assert sync(services, admin).status == "succeeded"
    with services.db.session() as session:
        statuses = {
            c.member_id: c.status
            for c in session.scalars(select(Connection).where(Connection.account_id == account))
        }
    assert statuses == {
        None: ConnectionStatus.ACTIVE,
        "m_bob": ConnectionStatus.NEEDS_REAUTH,
        "m_carol": ConnectionStatus.ACTIVE,
    }

    # Pricing review is deactivated: our shared link goes; the foreign one stays as it was.
    source.store.update(account, "price", active=False)
    sync(services, admin)
    shared = shared_by_name(sandbox)
    assert set(shared) == {"Discovery session", "Theirs"}
    assert shared["Theirs"]["id"] == foreign["id"]


def test_without_manage_customizations_no_shared_link_is_attempted(
    services: Services, sandbox: Any, source: Any
) -> None:
    account = new_account()
    source.store.put_all(account, [managed("disc", "Discovery call", account, ["m_jane"])])
    source.store.put_members(account, MEMBERS[:1])
    sandbox.state.set_permissions("user_jane", "orga_acme", [])
    admin = connect_directly(services, sandbox, account)
    assert sync(services, admin).status == "succeeded"
    assert set(our_links(sandbox, "user_jane")) == {"disc:m_jane"}
    assert sandbox.state.shared_links("orga_acme") == []
    assert sandbox.state.calls["POST /shared_scheduling_link/"] == 0
    with services.db.session() as session:
        connection = session.get(Connection, admin)
        assert connection is not None and connection.manage_customizations is False


def test_a_source_without_members_keeps_single_user_behaviour(
    services: Services, sandbox: Any, source: Any
) -> None:
    account = new_account()
    source.store.put_all(account, [personal("a", None, account), personal("b", None, account)])
    admin = connect_directly(services, sandbox, account)
    sync(services, admin)
    assert set(our_links(sandbox, "user_jane")) == {"a", "b"}
    calls = dict(sandbox.state.calls)
    sync(services, admin)  # the source answers 304: no Close call at all
    assert dict(sandbox.state.calls) == calls


# Finishing touches of issue #10: admin disconnect, follow-up runs, coverage.changed -------


def small_team(services: Services, sandbox: Any, source: Any) -> tuple[str, int]:
    """Jane (admin, also a member), Bob, Dave and Zoe (not in the org); one managed type
    assigned to all four and a personal type of Bob's. Returns (account, admin connection)."""
    account = new_account()
    members = ["m_jane", "m_bob", "m_dave", "m_zoe"]
    source.store.put_all(
        account,
        [
            personal("bob1", "m_bob", account),
            managed("disc", "Discovery call", account, members),
        ],
    )
    source.store.put_members(account, [m for m in MEMBERS if m["id"] in members])
    admin = connect_directly(services, sandbox, account)
    return account, admin


def coverage_events(services: Services, account: str) -> list[Any]:
    from service.infra.models import Event

    with services.db.session() as session:
        rows = session.scalars(
            select(Event)
            .where(Event.account_id == account, Event.type == "coverage.changed")
            .order_by(Event.id)
        ).all()
        session.expunge_all()
        return list(rows)


def test_admin_disconnect_removes_our_shared_links_and_keeps_member_connections(
    services: Services, sandbox: Any, source: Any
) -> None:
    from service.connections.disconnect import disconnect
    from service.infra.models import SharedLink

    account, admin = small_team(services, sandbox, source)
    jane_token = sandbox.state.issue_tokens(SANDBOX_CLIENT_ID, "user_jane", "orga_acme")
    foreign = requests.post(
        f"{sandbox.url}/api/v1/shared_scheduling_link/",
        json={"name": "Theirs"},
        headers={"Authorization": f"Bearer {jane_token['access_token']}"},
        timeout=5,
    ).json()
    bob = connect_directly(services, sandbox, account, user_id="user_bob", member_id="m_bob")
    sync(services, bob)
    sync(services, admin)
    assert set(shared_by_name(sandbox)) == {"Discovery call", "Theirs"}

    disconnect(services, admin, keep_links=False)

    assert set(shared_by_name(sandbox)) == {"Theirs"}  # ours gone, the foreign one untouched
    assert shared_by_name(sandbox)["Theirs"]["id"] == foreign["id"]
    assert our_links(sandbox, "user_jane") == {}
    assert set(our_links(sandbox, "user_bob")) == {"bob1", "disc:m_bob"}  # Bob's own grant
    with services.db.session() as session:
        assert (
            session.scalars(select(SharedLink).where(SharedLink.account_id == account)).all() == []
        )
        bob_row = session.get(Connection, bob)
        assert bob_row is not None and bob_row.status == ConnectionStatus.ACTIVE


def test_admin_disconnect_keeping_links_keeps_shared_links_and_their_records(
    services: Services, sandbox: Any, source: Any
) -> None:
    from service.connections.disconnect import disconnect
    from service.infra.models import SharedLink

    account, admin = small_team(services, sandbox, source)
    sync(services, admin)
    disconnect(services, admin, keep_links=True)
    assert set(shared_by_name(sandbox)) == {"Discovery call"}
    assert sandbox.state.calls["DELETE /shared_scheduling_link/{shared_id}/"] == 0
    with services.db.session() as session:
        kept = session.scalars(select(SharedLink).where(SharedLink.account_id == account)).all()
        assert [row.event_type_id for row in kept] == ["disc"]


def test_a_members_first_run_and_disconnect_switch_the_admins_mapping_soon(
    services: Services, sandbox: Any, source: Any, enqueued: Any
) -> None:
    from service.connections.disconnect import disconnect

    account, admin = small_team(services, sandbox, source)
    sync(services, admin)
    url = f"https://book.example.com/{account}/m_bob/disc"
    assert targets(shared_by_name(sandbox)["Discovery call"])["user_bob"] == url
    enqueued.calls.clear()

    bob = connect_directly(services, sandbox, account, user_id="user_bob", member_id="m_bob")
    sync(services, bob)
    # Bob's run created his links: the admin's run is asked for at once (not at the schedule).
    assert enqueued.calls == [(admin, "team", None)]
    follow_up = run_sync(services, admin, trigger=enqueued.calls[0][1])
    assert len(follow_up) == 1
    bob_disc = our_links(sandbox, "user_bob")["disc:m_bob"]["id"]
    assert targets(shared_by_name(sandbox)["Discovery call"])["user_bob"] == bob_disc

    # A no-change resync of Bob asks for nothing more.
    enqueued.calls.clear()
    sync(services, bob)
    assert enqueued.calls == []

    # Bob disconnects: his links leave Close and the admin's run maps him to the url again.
    disconnect(services, bob, keep_links=False)
    assert enqueued.calls == [(admin, "team", None)]
    run_sync(services, admin, trigger="team")
    assert targets(shared_by_name(sandbox)["Discovery call"])["user_bob"] == url


def test_coverage_changed_when_members_are_matched_connect_and_disconnect(
    services: Services, sandbox: Any, source: Any
) -> None:
    from pydantic import TypeAdapter

    from service.api.event_schemas import IntegratorEvent
    from service.connections.disconnect import disconnect
    from service.events.delivery import event_body

    account, admin = small_team(services, sandbox, source)
    assert coverage_events(services, account) == []
    sync(services, admin)
    (matched,) = coverage_events(services, account)
    assert matched.member_id is None and matched.connection_id == admin
    assert {m["member_id"]: m["change"] for m in matched.data["changed_members"]} == {
        "m_jane": "matched",
        "m_bob": "matched",
        "m_dave": "matched",
    }  # Zoe is not in the Close org: never matched
    assert (matched.data["covered"], matched.data["total"], matched.data["unmatched"]) == (3, 4, 1)
    sync(services, admin)  # nothing changed: no event
    assert len(coverage_events(services, account)) == 1

    # Bob's own connection (the real callback's path is in tests/connections; here its
    # effect on the outbox through disconnect), then Bob leaves the org in Close.
    bob = connect_directly(services, sandbox, account, user_id="user_bob", member_id="m_bob")
    sync(services, bob)
    disconnect(services, bob, keep_links=False)
    gone = coverage_events(services, account)[-1]
    assert gone.member_id == "m_bob" and gone.connection_id == bob
    assert gone.data["changed_members"] == [
        {"member_id": "m_bob", "change": "disconnected", "covered": True, "reason": None}
    ]  # still covered: the shared link maps him (to the url, after the admin's next run)
    source.store.put_members(
        account,
        [
            {**m, "email": "bob@elsewhere.example"} if m["id"] == "m_bob" else m
            for m in MEMBERS
            if m["id"] != "m_carol"
        ],
    )
    sync(services, admin)
    unmatched = coverage_events(services, account)[-1]
    assert unmatched.member_id == "m_bob"
    assert unmatched.data["changed_members"][0]["change"] == "unmatched"
    assert unmatched.data["changed_members"][0]["covered"] is False
    # Every payload is what the OpenAPI document promises.
    validate = TypeAdapter(IntegratorEvent)
    for row in coverage_events(services, account):
        validate.validate_python(event_body(row))


def test_a_member_connecting_through_the_callback_writes_coverage_changed(
    services: Services, sandbox: Any, source: Any
) -> None:
    from tests.connections.test_connect_flow import Browser

    browser = Browser(services)
    account, admin = small_team(services, sandbox, source)
    sync(services, admin)
    before = len(coverage_events(services, account))
    _, token = browser.new_connect(account, member_id="m_dave")
    callback = browser.consent(browser.start(token), user="user_dave", org="orga_acme")
    assert browser.client.get(callback).status_code == 303
    events = coverage_events(services, account)
    assert len(events) == before + 1
    connected = events[-1]
    assert connected.member_id == "m_dave"
    assert connected.data["changed_members"] == [
        {"member_id": "m_dave", "change": "connected", "covered": True, "reason": None}
    ]
    assert connected.data["connected"] == 2  # Jane through the admin connection, and Dave


def test_members_first_runs_at_the_same_time_all_succeed(
    services: Services, sandbox: Any, source: Any
) -> None:
    """Found by the team_org benchmark: members' runs of one account run concurrently, and
    each used to insert the roster rows, so all but one crashed on the unique key. Only the
    admin connection records the roster now; members' runs read it from the source."""
    from concurrent.futures import ThreadPoolExecutor

    from service.infra.models import TeamMember

    account, _admin = small_team(services, sandbox, source)
    members = [
        connect_directly(services, sandbox, account, user_id=f"user_{name}", member_id=f"m_{name}")
        for name in ("bob", "dave")
    ]
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = list(pool.map(lambda cid: sync(services, cid), members))
    assert [run.status for run in runs] == ["succeeded", "succeeded"], [r.error for r in runs]
    with services.db.session() as session:
        assert (
            session.scalars(select(TeamMember).where(TeamMember.account_id == account)).all() == []
        )


def test_a_failure_among_parallel_shared_link_calls_loses_none_that_close_confirmed(
    services: Services, sandbox: Any, source: Any
) -> None:
    """The shared-link step makes its calls in parallel. When one fails (here the first
    create answers 404), the calls already in flight still have their answers recorded: the
    next run creates only what is missing, so Close never holds a link twice."""
    account = new_account()
    everyone = [m["id"] for m in MEMBERS]
    types = [managed(f"t{i}", f"Team type {i}", account, everyone) for i in range(8)]
    source.store.put_all(account, types)
    source.store.put_members(account, MEMBERS)
    admin = connect_directly(services, sandbox, account)
    sandbox.state.set_faults(fail_next=1, fail_status=404, groups=["shared_scheduling_link"])
    first = sync(services, admin)
    assert first.status != "succeeded" and "will retry next run" in (first.error or "")
    assert sync(services, admin).status == "succeeded"

    ours = [s for s in sandbox.state.team("orga_acme")["shared_links"] if s["name"] != "Theirs"]
    names = sorted(s["name"] for s in ours if s["name"].startswith("Team type"))
    assert names == [f"Team type {i}" for i in range(8)]  # each exactly once
    jane = our_links(sandbox, "user_jane")
    for shared in ours:
        if shared["name"].startswith("Team type"):
            # Jane (the admin) holds her own links; Bob, Carol, Dave are mapped to the URL.
            assert set(targets(shared)) == {"user_jane", "user_bob", "user_carol", "user_dave"}
            assert targets(shared)["user_jane"] in {link["id"] for link in jane.values()}
    before = writes(sandbox)
    assert sync(services, admin).status == "succeeded"
    assert writes(sandbox) == before
