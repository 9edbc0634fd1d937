"""Property tests of the team rules (service.sync.team): who carries which event type, and the
shared-link plan: from any recorded state, applying the plan to a simulated Close yields
exactly the desired shared links and mappings, a second plan is empty, and shared links we did
not create are never touched."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.sync import team

pytestmark = pytest.mark.unit

MEMBERS = ["m1", "m2", "m3", "m4"]
ORG = {"m1@acme.com": "user_1", "m2@acme.com": "user_2", "m3@acme.com": "user_3"}  # m4: none


@st.composite
def teams(draw: st.DrawFn) -> tuple[list[dict[str, Any]], dict[str, str | None]]:
    """Managed event types with random assignments, and a roster (emails vary in case)."""
    members = {
        m: draw(st.sampled_from([f"{m}@acme.com", f" {m.upper()}@ACME.com ", f"{m}@elsewhere.io"]))
        for m in draw(st.lists(st.sampled_from(MEMBERS), unique=True))
    }
    managed = []
    for n in draw(st.lists(st.integers(1, 6), unique=True, max_size=5)):
        assigned = draw(st.lists(st.sampled_from(MEMBERS), unique=True))
        managed.append(
            {
                "id": f"et{n}",
                "name": draw(st.sampled_from(["Discovery", "Demo", "Review"])) + f" {n}",
                "description": draw(st.sampled_from([None, "One", "Two"])),
                "managed": True,
                "assignments": [
                    {"member_id": m, "url": f"https://b.example/{m}/{n}"} for m in assigned
                ],
            }
        )
    return managed, members


user_links = st.dictionaries(
    st.builds(
        team.assignment_source_id,
        st.sampled_from([f"et{n}" for n in range(1, 7)]),
        st.sampled_from(MEMBERS),
    ),
    st.sampled_from(["schlnk_a", "schlnk_b"]),
    max_size=6,
)


@dataclass
class FakeClose:
    """What Close holds: shared links by id (ours and foreign) and mappings."""

    shared: dict[str, dict[str, Any]] = field(default_factory=dict)
    mappings: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    n: int = 0


@dataclass
class Recorded:
    shared: dict[str, tuple[str, str]] = field(default_factory=dict)  # et → (close id, hash)
    mappings: dict[tuple[str, str], str] = field(default_factory=dict)


def apply(
    plan: team.SharedPlan, close: FakeClose, rec: Recorded, wanted: list[team.DesiredShared]
) -> None:
    for item in plan.create:
        close.n += 1
        sid = f"shared_{close.n}"
        close.shared[sid] = dict(item.fields)
        rec.shared[item.event_type_id] = (sid, item.content_hash)
        for key in [k for k in rec.mappings if k[0] == item.event_type_id]:
            del rec.mappings[key]
    for item in plan.update:
        sid = rec.shared[item.event_type_id][0]
        assert sid in close.shared
        close.shared[sid] = dict(item.fields)
        rec.shared[item.event_type_id] = (sid, item.content_hash)
    for m in plan.map:
        sid = rec.shared[m.event_type_id][0]
        close.mappings[(sid, m.close_user_id)] = (m.target_kind, m.target_value)
        rec.mappings[(m.event_type_id, m.close_user_id)] = m.content_hash
    for et, user in plan.unmap:
        sid = rec.shared[et][0]
        close.mappings.pop((sid, user), None)
        del rec.mappings[(et, user)]
    for et in plan.delete:
        sid, _ = rec.shared.pop(et)
        close.shared.pop(sid, None)
        for key in [k for k in close.mappings if k[0] == sid]:
            del close.mappings[key]
        for key in [k for k in rec.mappings if k[0] == et]:
            del rec.mappings[key]


def run(
    close: FakeClose,
    rec: Recorded,
    managed: list[dict[str, Any]],
    members: dict[str, str | None],
    links: dict[str, str],
    complete: bool = True,
) -> tuple[team.SharedPlan, list[team.DesiredShared], list[team.DesiredMapping]]:
    shared, mappings = team.desired_shared(managed, members, ORG, links)
    plan = team.plan_shared(
        shared,
        mappings,
        {et: h for et, (_sid, h) in rec.shared.items()},
        dict(rec.mappings),
        complete=complete,
    )
    apply(plan, close, rec, shared)
    return plan, shared, mappings


@settings(max_examples=150, deadline=None)
@given(first=teams(), second=teams(), links1=user_links, links2=user_links)
def test_random_teams_and_edits_converge_exactly_and_leave_foreign_links_alone(
    first: tuple[list[dict[str, Any]], dict[str, str | None]],
    second: tuple[list[dict[str, Any]], dict[str, str | None]],
    links1: dict[str, str],
    links2: dict[str, str],
) -> None:
    close = FakeClose(shared={"foreign_1": {"name": "Theirs"}})
    close.mappings[("foreign_1", "user_1")] = ("url", "https://theirs.example")
    rec = Recorded()
    for managed, members, links in ((*first, links1), (*second, links2)):
        _plan, shared, mappings = run(close, rec, managed, members, links)
        ours = {rec.shared[s.event_type_id][0]: s.fields for s in shared}
        assert {k: v for k, v in close.shared.items() if k != "foreign_1"} == ours
        assert {k: v for k, v in close.mappings.items() if k[0] != "foreign_1"} == {
            (rec.shared[m.event_type_id][0], m.close_user_id): (m.target_kind, m.target_value)
            for m in mappings
        }
        again, _, _ = run(close, rec, managed, members, links)
        assert again.writes == 0  # a no-change resync writes nothing
        assert close.shared["foreign_1"] == {"name": "Theirs"}
        assert close.mappings[("foreign_1", "user_1")] == ("url", "https://theirs.example")


@settings(max_examples=100, deadline=None)
@given(first=teams(), second=teams())
def test_an_incomplete_listing_never_deletes_or_unmaps(
    first: tuple[list[dict[str, Any]], dict[str, str | None]],
    second: tuple[list[dict[str, Any]], dict[str, str | None]],
) -> None:
    close, rec = FakeClose(), Recorded()
    run(close, rec, *first, {})
    plan, _, _ = run(close, rec, *second, {}, complete=False)
    assert plan.delete == [] and plan.unmap == []


@given(members=st.dictionaries(st.sampled_from(MEMBERS), st.sampled_from(["a@x.io", "b@x.io"])))
def test_mappings_only_for_members_in_the_org_and_one_per_close_user(
    members: dict[str, str | None],
) -> None:
    managed = [
        {
            "id": "et",
            "name": "T",
            "managed": True,
            "assignments": [{"member_id": m, "url": f"https://b.example/{m}"} for m in MEMBERS],
        }
    ]
    org = {"a@x.io": "user_a"}
    _shared, mappings = team.desired_shared(managed, members, org, {})
    assert {m.close_user_id for m in mappings} <= {"user_a"}
    assert len(mappings) == (1 if "a@x.io" in members.values() else 0)


def test_scopes_split_the_listing_between_connections() -> None:
    items = [
        {"id": "acct", "name": "Account-level"},
        {"id": "bob1", "owner_id": "m_bob"},
        {"id": "jane1", "owner_id": "m_jane"},
        {
            "id": "team",
            "managed": True,
            "url": "https://b.example/team",
            "assignments": [
                {"member_id": "m_bob", "url": "https://b.example/bob/team"},
                {"member_id": "m_jane", "url": "https://b.example/jane/team"},
            ],
        },
    ]
    members = {"m_jane": "JANE@acme.com ", "m_bob": "bob@acme.com"}
    admin = team.admin_scope("jane@acme.com", members)
    assert admin == team.Scope(member_id="m_jane", account_level=True)
    carried = [e for item in items for e in team.expand(item, admin)]
    assert [e["id"] for e in carried] == ["acct", "jane1", "team:m_jane"]
    assert carried[-1]["url"] == "https://b.example/jane/team" and "assignments" not in carried[-1]
    bob = [e["id"] for item in items for e in team.expand(item, team.member_scope("m_bob"))]
    assert bob == ["bob1", "team:m_bob"]
    stranger = team.admin_scope("other@acme.com", members)
    assert [e["id"] for item in items for e in team.expand(item, stranger)] == ["acct"]
