"""Property tests of the webhook signature: what sign() makes, verify() accepts within the
tolerance; any change to the body, the signature or the timestamp is refused; the parser fails
only with its own error, whatever text it is given."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from service.api.signatures import (
    TOLERANCE_SECONDS,
    SignatureError,
    parse_signature_header,
    sign,
    verify,
)

secrets_ = st.text(min_size=1, max_size=40)
bodies = st.binary(max_size=2000)
times = st.integers(min_value=1_000_000_000, max_value=4_000_000_000)
skews = st.integers(-TOLERANCE_SECONDS, TOLERANCE_SECONDS)
hex64 = st.text(alphabet="0123456789abcdefABCDEF", min_size=64, max_size=64)


pytestmark = pytest.mark.unit


def header_for(secret: str, t: int, body: bytes) -> str:
    return f"t={t},v1={sign(secret, t, body)}"


@given(secret=secrets_, body=bodies, t=times, skew=skews)
def test_signed_bodies_verify_within_the_tolerance(
    secret: str, body: bytes, t: int, skew: int
) -> None:
    assert verify(secret, header_for(secret, t, body), body, now=t + skew) == t


@given(
    secret=secrets_,
    body=bodies.filter(bool),
    t=times,
    index=st.integers(min_value=0),
    flip=st.integers(1, 255),
)
def test_any_changed_byte_of_the_body_is_refused(
    secret: str, body: bytes, t: int, index: int, flip: int
) -> None:
    position = index % len(body)
    tampered = body[:position] + bytes([body[position] ^ flip]) + body[position + 1 :]
    with pytest.raises(SignatureError, match="does not match"):
        verify(secret, header_for(secret, t, body), tampered, now=t)


@given(secret=secrets_, body=bodies, t=times, extra=st.binary(min_size=1, max_size=8))
def test_a_longer_or_shorter_body_is_refused(
    secret: str, body: bytes, t: int, extra: bytes
) -> None:
    header = header_for(secret, t, body)
    with pytest.raises(SignatureError):
        verify(secret, header, body + extra, now=t)
    if body:
        with pytest.raises(SignatureError):
            verify(secret, header, body[:-1], now=t)


@given(
    secret=secrets_,
    body=bodies,
    t=times,
    index=st.integers(0, 63),
    digit=st.sampled_from("0123456789abcdef"),
)
def test_any_changed_signature_character_is_refused(
    secret: str, body: bytes, t: int, index: int, digit: str
) -> None:
    good = sign(secret, t, body)
    if good[index] == digit:
        digit = "f" if digit != "f" else "0"
    bad = good[:index] + digit + good[index + 1 :]
    with pytest.raises(SignatureError):
        verify(secret, f"t={t},v1={bad}", body, now=t)


@given(secret=secrets_, body=bodies, t=times, delta=st.integers(-10, 10).filter(bool))
def test_a_changed_timestamp_is_refused_even_within_the_tolerance(
    secret: str, body: bytes, t: int, delta: int
) -> None:
    signature = sign(secret, t, body)
    with pytest.raises(SignatureError, match="does not match"):
        verify(secret, f"t={t + delta},v1={signature}", body, now=t)


@given(secret=secrets_, other=secrets_, body=bodies, t=times)
def test_another_secret_is_refused(secret: str, other: str, body: bytes, t: int) -> None:
    if other != secret:
        with pytest.raises(SignatureError):
            verify(other, header_for(secret, t, body), body, now=t)


@given(
    secret=secrets_,
    body=bodies,
    t=times,
    off=st.integers(TOLERANCE_SECONDS + 1, 10**6),
    direction=st.sampled_from([-1, 1]),
)
def test_timestamps_beyond_five_minutes_either_way_are_refused(
    secret: str, body: bytes, t: int, off: int, direction: int
) -> None:
    with pytest.raises(SignatureError, match="5 minutes"):
        verify(secret, header_for(secret, t, body), body, now=t + direction * off)


@given(text=st.text(max_size=300))
@example("")
@example("t=")
@example("t=1,v1=")
@example("v1=" + "a" * 64)
@example("t=١٢٣,v1=" + "a" * 64)  # non-ASCII digits
@example("t=99999999999999999999,v1=" + "a" * 64)
@example("," * 3000)
def test_the_parser_only_raises_its_own_error_on_any_text(text: str) -> None:
    try:
        timestamp, signatures = parse_signature_header(text)
    except SignatureError as exc:
        assert str(exc)  # a message that says what is wrong
    else:
        assert timestamp >= 0 and signatures


entries = st.one_of(
    st.builds(
        lambda v: f"t={v}", st.one_of(st.integers(-5, 10**13).map(str), st.text(max_size=14))
    ),
    st.builds(lambda v: f"v1={v}", st.one_of(hex64, st.text(max_size=70))),
    st.builds(
        lambda k, v: f"{k}={v}", st.sampled_from(["v0", "v2", "T", " t", "x"]), st.text(max_size=10)
    ),
    st.text(max_size=10),
)


@given(parts=st.lists(entries, max_size=6), sep=st.sampled_from([",", ", ", ",,", ";"]))
def test_the_parser_only_raises_its_own_error_on_near_valid_headers(
    parts: list[str], sep: str
) -> None:
    try:
        timestamp, signatures = parse_signature_header(sep.join(parts))
    except SignatureError:
        return
    assert 0 <= timestamp < 10**12
    assert signatures and all(len(s) == 64 and s == s.lower() for s in signatures)


def test_parse_returns_the_timestamp_and_every_signature_lower_cased() -> None:
    a, b = "A" * 64, "0123456789abcdef" * 4
    assert parse_signature_header(f"t=1700000000, v1={a},v1={b},v2=future") == (
        1700000000,
        [a.lower(), b],
    )


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "missing"),
        ("", "missing"),
        ("v1=" + "a" * 64, "no t="),
        ("t=1700000000", "no v1="),
        ("t=1700000000,t=1700000001,v1=" + "a" * 64, "more than one t="),
        ("t=soon,v1=" + "a" * 64, "unix timestamp"),
        ("t=-1,v1=" + "a" * 64, "unix timestamp"),
        ("t=1700000000,v1=abc", "hex"),
        ("t=1700000000,v1=" + "g" * 64, "hex"),
        ("t=1700000000,garbage", "t=<unix seconds>"),
        ("t=1," + "v1=" + "a" * 64 + "," * 3000, "too long"),
    ],
)
def test_parser_errors_say_what_is_wrong(header: str | None, message: str) -> None:
    with pytest.raises(SignatureError, match=message):
        parse_signature_header(header)


def test_signature_error_is_a_value_error() -> None:
    assert issubclass(SignatureError, ValueError)


def test_one_of_several_signatures_is_enough_for_secret_rotation() -> None:
    body = b'{"id": "1"}'
    t = 1700000000
    header = f"t={t},v1={sign('old', t, body)},v1={sign('new', t, body)}"
    assert verify("new", header, body, now=t) == t
    assert verify("old", header, body, now=t) == t
    with pytest.raises(SignatureError):
        verify("neither", header, body, now=t)


def test_the_tolerance_is_inclusive_and_adjustable() -> None:
    body, t = b"{}", 1700000000
    header = header_for("s", t, body)
    assert verify("s", header, body, now=t + TOLERANCE_SECONDS) == t
    assert verify("s", header, body, now=t - TOLERANCE_SECONDS) == t
    with pytest.raises(SignatureError):
        verify("s", header, body, now=t + 61, tolerance=60)


def test_sign_is_the_documented_hmac() -> None:
    import hashlib
    import hmac

    expected = hmac.new(b"secret", b"1700000000.{}", hashlib.sha256).hexdigest()
    assert sign("secret", 1700000000, b"{}") == expected
