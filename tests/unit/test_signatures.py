"""Property tests of the webhook signature: what sign() makes, verify() accepts; any change
to body or signature is refused; the parser fails only with its own error."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.api.signatures import SignatureError, parse_signature_header, sign, verify

secrets_ = st.text(min_size=1, max_size=40)
bodies = st.binary(max_size=2000)
times = st.integers(min_value=1_000_000_000, max_value=4_000_000_000)


@given(secret=secrets_, body=bodies, t=times, skew=st.integers(-300, 300))
def test_signed_bodies_verify_within_the_tolerance(
    secret: str, body: bytes, t: int, skew: int
) -> None:
    header = f"t={t},v1={sign(secret, t, body)}"
    assert verify(secret, header, body, now=t + skew) == t


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
    header = f"t={t},v1={sign(secret, t, body)}"
    position = index % len(body)
    tampered = body[:position] + bytes([body[position] ^ flip]) + body[position + 1 :]
    with pytest.raises(SignatureError):
        verify(secret, header, tampered, now=t)


@given(secret=secrets_, body=bodies, t=times, index=st.integers(0, 63))
def test_any_changed_signature_character_is_refused(
    secret: str, body: bytes, t: int, index: int
) -> None:
    good = sign(secret, t, body)
    bad = good[:index] + ("0" if good[index] != "0" else "1") + good[index + 1 :]
    with pytest.raises(SignatureError):
        verify(secret, f"t={t},v1={bad}", body, now=t)


@given(
    secret=secrets_,
    body=bodies,
    t=times,
    off=st.integers(301, 10**6),
    sign_=st.sampled_from([-1, 1]),
)
def test_timestamps_beyond_five_minutes_are_refused(
    secret: str, body: bytes, t: int, off: int, sign_: int
) -> None:
    header = f"t={t},v1={sign(secret, t, body)}"
    with pytest.raises(SignatureError, match="5 minutes"):
        verify(secret, header, body, now=t + sign_ * off)


@given(text=st.text(max_size=300))
def test_the_parser_only_raises_its_own_error(text: str) -> None:
    try:
        parse_signature_header(text)
    except SignatureError:
        pass


def test_one_of_several_signatures_is_enough_for_secret_rotation() -> None:
    body = b'{"id": "1"}'
    header = f"t=1700000000,v1={sign('old', 1700000000, body)},v1={sign('new', 1700000000, body)}"
    assert verify("new", header, body, now=1700000000) == 1700000000
