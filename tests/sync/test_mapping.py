from __future__ import annotations

import pytest

from service.sync.mapping import (
    MAX_NAME,
    DesiredLink,
    InvalidLink,
    content_hash,
    is_active,
    map_event_type,
    source_id_of,
)

pytestmark = pytest.mark.unit


GOOD = {
    "id": "evt_1",
    "name": "30-min intro call",
    "url": "https://book.example.com/acme/intro",
    "description": "A first conversation",
    "duration_minutes": 30,
    "kind": "One-on-one",
    "active": True,
}


def test_maps_every_field_to_closes_names() -> None:
    link = map_event_type(GOOD)
    assert isinstance(link, DesiredLink)
    assert link.fields == {
        "source_id": "evt_1",
        "name": "30-min intro call",
        "url": "https://book.example.com/acme/intro",
        "description": "A first conversation",
        "source_type": "One-on-one",
        "duration_in_minutes": 30,
    }
    assert link.content_hash == content_hash(link.fields)


def test_empty_optional_fields_are_sent_as_null_so_clearing_reaches_close() -> None:
    link = map_event_type({"id": 7, "name": "Chat", "url": "http://x.example/c", "kind": " "})
    assert isinstance(link, DesiredLink)
    assert link.fields == {
        "source_id": "7",
        "name": "Chat",
        "url": "http://x.example/c",
        "description": None,
        "source_type": None,
        "duration_in_minutes": None,
    }


@pytest.mark.parametrize("cleared", ["description", "kind", "duration_minutes"])
def test_clearing_a_field_changes_the_content_hash(cleared: str) -> None:
    full = map_event_type(GOOD)
    emptied = map_event_type({**GOOD, cleared: None})
    assert isinstance(full, DesiredLink) and isinstance(emptied, DesiredLink)
    assert full.content_hash != emptied.content_hash


def test_hash_ignores_null_keys_so_links_pushed_before_nulls_are_not_rewritten() -> None:
    link = map_event_type({"id": 7, "name": "Chat", "url": "http://x.example/c"})
    assert isinstance(link, DesiredLink)
    assert link.content_hash == content_hash(
        {"source_id": "7", "name": "Chat", "url": "http://x.example/c"}
    )


def test_a_source_id_with_a_slash_is_a_per_link_error_never_sent() -> None:
    result = map_event_type({**GOOD, "id": "team/intro"})
    assert isinstance(result, InvalidLink)
    assert result.source_id == "team/intro"
    assert result.error == "source_id must not contain '/'"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"url": None}, "url is missing"),
        ({"url": "/relative/path"}, "absolute http(s)"),
        ({"url": "ftp://files.example.com/x"}, "absolute http(s)"),
        ({"url": "javascript:alert(1)"}, "absolute http(s)"),
        ({"url": "https://exa mple.com/x"}, "spaces"),
        ({"url": "https://e.com/" + "a" * 3000}, "longer than 2048"),
        ({"name": ""}, "name is missing"),
        ({"name": "x" * (MAX_NAME + 1)}, "longer than 255"),
        ({"name": "bad\x00name"}, "control characters"),
        ({"duration_minutes": 0}, "between 1 and 1440"),
        ({"duration_minutes": 99999}, "between 1 and 1440"),
        ({"duration_minutes": 12.5}, "whole number"),
        ({"duration_minutes": True}, "whole number"),
        ({"kind": 5}, "kind must be a string"),
    ],
)
def test_bad_event_types_become_per_link_errors(change: dict[str, object], message: str) -> None:
    result = map_event_type({**GOOD, **change})
    assert isinstance(result, InvalidLink)
    assert result.source_id == "evt_1"
    assert message in result.error


def test_hash_changes_with_any_field_and_not_with_key_order() -> None:
    a = map_event_type(GOOD)
    b = map_event_type(dict(reversed(list(GOOD.items()))))
    c = map_event_type({**GOOD, "description": "changed"})
    assert isinstance(a, DesiredLink) and isinstance(b, DesiredLink) and isinstance(c, DesiredLink)
    assert a.content_hash == b.content_hash
    assert a.content_hash != c.content_hash


def test_ids_and_activity() -> None:
    assert source_id_of({"id": ""}) is None
    assert source_id_of({"id": True}) is None
    assert source_id_of({"id": "x" * 256}) is None
    assert source_id_of({"id": 12}) == "12"
    assert source_id_of("not a dict") is None
    assert is_active({}) is True
    assert is_active({"active": False}) is False
