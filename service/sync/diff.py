"""The plan: from what the source wants and what Close last accepted, the minimal changes.

Pure functions; the property "applying the plan to the old state yields the new state" is
tested with Hypothesis.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from service.sync.mapping import DesiredLink, InvalidLink


@dataclass(frozen=True)
class KnownLink:
    """What we know of one link from our own table."""

    source_id: str
    content_hash: str | None  # hash of what Close accepted; None when never accepted
    in_close: bool  # Close holds (or may hold) a link of ours with this source_id


@dataclass
class Plan:
    upserts: list[DesiredLink] = field(default_factory=list)  # create or update in Close
    creates: set[str] = field(default_factory=set)  # the upserts that are new to Close
    deletes: list[str] = field(default_factory=list)  # source_ids to delete in Close
    unchanged: list[str] = field(default_factory=list)
    invalid: list[InvalidLink] = field(default_factory=list)
    deletes_withheld: int = 0  # deletes we did not plan because the listing was incomplete


def plan(
    desired: list[DesiredLink],
    invalid: list[InvalidLink],
    known: dict[str, KnownLink],
    *,
    listing_complete: bool,
) -> Plan:
    result = Plan(invalid=list(invalid))
    wanted: set[str] = set()
    for link in desired:
        wanted.add(link.source_id)
        current = known.get(link.source_id)
        if current is not None and current.in_close and current.content_hash == link.content_hash:
            result.unchanged.append(link.source_id)
        else:
            result.upserts.append(link)
            if current is None or not current.in_close:
                result.creates.add(link.source_id)
    # An invalid event type still exists at the source: keep what Close has of it.
    wanted.update(item.source_id for item in invalid)
    for source_id, current in known.items():
        if source_id in wanted or not current.in_close:
            continue
        if listing_complete:
            result.deletes.append(source_id)
        else:
            result.deletes_withheld += 1
    return result


def apply_plan(
    close_state: dict[str, str], desired: list[DesiredLink], result: Plan
) -> dict[str, str]:
    """What Close holds (source_id → content hash) after the plan succeeds. Used by tests."""
    by_id = {link.source_id: link for link in desired}
    after = dict(close_state)
    for link in result.upserts:
        after[link.source_id] = by_id[link.source_id].content_hash
    for source_id in result.deletes:
        after.pop(source_id, None)
    return after
