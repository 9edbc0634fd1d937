"""Property tests of the source payload validation: any JSON-ish event type maps to either a
valid Close payload within the limits or a per-link error; nothing else escapes."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.sync.mapping import (
    MAX_DESCRIPTION,
    MAX_NAME,
    MAX_URL,
    DesiredLink,
    InvalidLink,
    map_event_type,
    source_id_of,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=300),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=5,
)
urls = st.one_of(
    st.text(max_size=50),
    st.builds(
        lambda host, path: f"https://{host}.example/{path}",
        st.from_regex(r"[a-z]{1,10}", fullmatch=True),
        st.text(max_size=40),
    ),
)
event_types = st.fixed_dictionaries(
    {"id": st.one_of(st.text(min_size=1, max_size=300), st.integers(), st.none())},
    optional={
        "name": st.one_of(st.text(max_size=300), json_values),
        "url": st.one_of(urls, json_values),
        "description": st.one_of(st.text(max_size=6000), json_values),
        "duration_minutes": st.one_of(
            st.integers(-10, 2000), st.floats(allow_nan=False), json_values
        ),
        "kind": st.one_of(st.text(max_size=120), json_values),
        "active": st.booleans(),
    },
)


pytestmark = pytest.mark.unit


@given(item=event_types)
def test_every_event_type_maps_to_a_valid_payload_or_a_per_link_error(item: dict[str, Any]) -> None:
    if source_id_of(item) is None:
        return  # no usable id: the engine records it as a run error, not a link
    result = map_event_type(item)
    assert isinstance(result, DesiredLink | InvalidLink)
    if isinstance(result, InvalidLink):
        assert result.error
        return
    fields = result.fields
    assert 0 < len(fields["name"]) <= MAX_NAME
    assert len(fields["url"]) <= MAX_URL and urlsplit(fields["url"]).scheme in ("http", "https")
    assert len(fields["description"] or "") <= MAX_DESCRIPTION
    assert 1 <= (fields["duration_in_minutes"] or 1) <= 1440
    assert "/" not in fields["source_id"]
    assert set(fields) == {
        "source_id",
        "name",
        "url",
        "description",
        "source_type",
        "duration_in_minutes",
    }
