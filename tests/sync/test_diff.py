"""The plan is minimal and correct: applying it to Close's old state yields the new state."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.sync.diff import KnownLink, apply_plan, plan
from service.sync.mapping import DesiredLink, InvalidLink, content_hash

pytestmark = pytest.mark.unit


def desired(source_id: str, name: str) -> DesiredLink:
    fields = {"source_id": source_id, "name": name, "url": f"https://b.example/{source_id}"}
    return DesiredLink(source_id, fields, content_hash(fields))


ids = st.sampled_from([f"e{i}" for i in range(12)])
names = st.sampled_from(["a", "b", "c"])


@given(
    old=st.dictionaries(ids, names, max_size=12),
    new=st.dictionaries(ids, names, max_size=12),
)
def test_applying_the_plan_to_the_old_state_yields_the_new_state(
    old: dict[str, str], new: dict[str, str]
) -> None:
    old_links = {sid: desired(sid, name) for sid, name in old.items()}
    known = {sid: KnownLink(sid, link.content_hash, True) for sid, link in old_links.items()}
    wanted = [desired(sid, name) for sid, name in new.items()]
    result = plan(wanted, [], known, listing_complete=True)
    close_before = {sid: link.content_hash for sid, link in old_links.items()}
    after = apply_plan(close_before, wanted, result)
    assert after == {link.source_id: link.content_hash for link in wanted}
    # Minimal: no write for what did not change.
    assert len(result.upserts) == sum(1 for sid, n in new.items() if old.get(sid) != n)
    assert len(result.deletes) == len(set(old) - set(new))


@given(old=st.dictionaries(ids, names, max_size=12), new=st.dictionaries(ids, names, max_size=12))
def test_an_incomplete_listing_never_deletes(old: dict[str, str], new: dict[str, str]) -> None:
    known = {sid: KnownLink(sid, desired(sid, n).content_hash, True) for sid, n in old.items()}
    result = plan([desired(s, n) for s, n in new.items()], [], known, listing_complete=False)
    assert result.deletes == []
    assert result.deletes_withheld == len(set(old) - set(new))


def test_no_change_plans_nothing() -> None:
    links = [desired("e1", "a"), desired("e2", "b")]
    known = {d.source_id: KnownLink(d.source_id, d.content_hash, True) for d in links}
    result = plan(links, [], known, listing_complete=True)
    assert (result.upserts, result.deletes, sorted(result.unchanged)) == ([], [], ["e1", "e2"])


def test_invalid_event_type_keeps_the_old_link_in_close() -> None:
    old = desired("e1", "a")
    known = {"e1": KnownLink("e1", old.content_hash, True)}
    result = plan([], [InvalidLink("e1", "a", "url is missing")], known, listing_complete=True)
    assert result.deletes == [] and result.upserts == []


def test_a_link_close_never_accepted_is_created_not_updated() -> None:
    link = desired("e1", "a")
    result = plan([link], [], {"e1": KnownLink("e1", None, False)}, listing_complete=True)
    assert result.creates == {"e1"} and result.upserts == [link]
