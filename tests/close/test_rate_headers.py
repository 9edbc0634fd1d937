"""Reading Close's rate-limit signals: whichever is present, the longest wait, and nothing
malformed ever raises."""

from __future__ import annotations

import pytest

from service.close.ratelimit import DEFAULT_RATE, MIN_LIMITED_WAIT, parse_rate_headers
from service.connections.authorize import _org_name

pytestmark = pytest.mark.unit


def test_pacing_comes_from_remaining_over_reset_never_from_limit() -> None:
    info = parse_rate_headers({"RateLimit": "limit=600, remaining=5, reset=2.5"})
    assert info.pace(DEFAULT_RATE) == 2.0  # not 600/s
    assert (
        parse_rate_headers({"RateLimit": "limit=600, remaining=599, reset=0.1"}).pace(DEFAULT_RATE)
        == DEFAULT_RATE
    )  # capped at the default


def test_a_429_waits_the_longest_signal_present() -> None:
    info = parse_rate_headers(
        {"RateLimit": "limit=20, remaining=0, reset=0", "Retry-After": "3"},
        {"error": {"rate_reset": 1.5}},
    )
    assert info.limited_wait() == 3.0  # reset=0 does not win over Retry-After
    assert parse_rate_headers({}, {"error": {"rate_reset": 0.4}}).limited_wait() == 0.4
    assert parse_rate_headers({"RateLimit": "reset=0"}).limited_wait() == MIN_LIMITED_WAIT
    assert parse_rate_headers({}).limited_wait() is None  # bare: the client backs off


@pytest.mark.parametrize(
    "header",
    ["limit=1.2.3, remaining=x, reset=-1", "remaining=nan, reset=inf", "garbage", "reset=1e999"],
)
def test_malformed_numbers_are_ignored_not_raised(header: str) -> None:
    info = parse_rate_headers(
        {"RateLimit": header, "Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"},
        {"error": {"rate_reset": "soon"}},
    )
    assert info.remaining is None and info.reset is None and info.retry_after is None
    assert info.body_reset is None and info.limited_wait() is None


def test_me_organizations_as_plain_ids_do_not_crash() -> None:
    assert _org_name({"organizations": ["orga_acme", None, 5]}, "orga_acme") is None
    assert (
        _org_name({"organizations": [{"id": "orga_acme", "name": "Acme"}]}, "orga_acme") == "Acme"
    )
    assert _org_name({"organizations": "nonsense"}, "orga_acme") is None
