"""Connect sessions: the signed, short-lived, single-account links the integrator hands out."""

from __future__ import annotations

import secrets
import unicodedata
from datetime import timedelta

from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy.orm import Session

from service.errors import Gone, NotFound, ValidationFailed
from service.infra.db import utcnow
from service.infra.models import ConnectSession
from service.settings import Settings, normalized_origin

ACCOUNT_ID_MAX = 255


def validate_account_id(account_id: object, field: str = "account_id") -> str:
    if not isinstance(account_id, str) or not account_id.strip():
        raise ValidationFailed(f"{field} must be a non-empty string", field=field)
    if len(account_id) > ACCOUNT_ID_MAX:
        raise ValidationFailed(f"{field} must be at most {ACCOUNT_ID_MAX} characters", field=field)
    if any(ord(ch) < 32 or ch in "/\\\x7f" for ch in account_id):
        raise ValidationFailed(
            f"{field} must not contain control characters or slashes", field=field
        )
    if account_id in (".", ".."):  # a dot segment would climb out of the source's URL path
        raise ValidationFailed(f"{field} must not be '.' or '..'", field=field)
    return account_id


def validate_return_url(return_url: object, settings: Settings) -> str | None:
    """The integrator's return_url, if its origin is allowed. It ends up in a Location header
    after the connection is saved, so anything a header cannot carry is refused here, up front:
    control characters (CR/LF above all), spaces and invisible format characters. Origins are
    compared in one canonical spelling (IDN as punycode, IPv6 compressed, no default port)."""
    if return_url is None:
        return None
    if not isinstance(return_url, str) or len(return_url) > 2048:
        raise ValidationFailed("return_url must be a URL string", field="return_url")
    if any(ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf") for ch in return_url):
        raise ValidationFailed(
            "return_url must not contain spaces or control characters", field="return_url"
        )
    try:
        origin = normalized_origin(return_url)
    except ValueError as exc:
        raise ValidationFailed(f"return_url {exc}", field="return_url") from None
    allowed = set()
    for candidate in settings.RETURN_URL_ALLOWED_ORIGINS:
        try:
            allowed.add(normalized_origin(candidate))
        except ValueError:
            continue  # refused at start-up; only reachable when set after loading
    if origin not in allowed:
        raise ValidationFailed(
            "return_url's origin is not in RETURN_URL_ALLOWED_ORIGINS", field="return_url"
        )
    return return_url


def _serializer(settings: Settings) -> URLSafeSerializer:
    return URLSafeSerializer(settings.SECRET_KEY or "", salt="linksync-connect-session")


def create_connect_session(
    session: Session, settings: Settings, account_id: object, return_url: object = None
) -> tuple[ConnectSession, str, str]:
    """Add a connect session; return it, its signed token and its connect URL."""
    account = validate_account_id(account_id)
    url = validate_return_url(return_url, settings)
    now = utcnow()
    connect = ConnectSession(
        id=secrets.token_urlsafe(24),
        account_id=account,
        return_url=url,
        created_at=now,
        expires_at=now + timedelta(seconds=settings.CONNECT_SESSION_TTL_SECONDS),
    )
    session.add(connect)
    session.flush()
    token = _serializer(settings).dumps(connect.id)
    return connect, token, f"{settings.PUBLIC_URL}/connect/{token}"


def resolve_connect_token(session: Session, settings: Settings, token: str) -> ConnectSession:
    """The live connect session behind a token: NotFound if forged, Gone if expired."""
    try:
        session_id = _serializer(settings).loads(token)
    except BadSignature:
        raise NotFound("This connect link is not valid.") from None
    connect = session.get(ConnectSession, session_id) if isinstance(session_id, str) else None
    if connect is None:
        raise NotFound("This connect link is not valid.")
    if connect.expires_at <= utcnow():
        raise Gone("This connect link has expired. Ask for a new one from your settings page.")
    return connect


def connect_token_for(settings: Settings, connect_session_id: str) -> str:
    """The signed token of an existing connect session (to link back to its page)."""
    return str(_serializer(settings).dumps(connect_session_id))
