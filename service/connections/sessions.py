"""Connect sessions: the signed, short-lived, single-use, single-account links the integrator
hands out; and manage sessions: a browser's revocable access to one connection's status view.

Why a manage_sessions table rather than a signed cookie bound to a per-connection epoch: the
integrator mints manage links at any time, and a link must be single-use (claimed by the first
browser), which needs a server-side record anyway; rows also let one browser's access be
revoked without logging out the others, and expire server-side whatever the cookie says."""

from __future__ import annotations

import hmac
import secrets
import unicodedata
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.errors import (
    Conflict,
    DomainError,
    Gone,
    NotFound,
    Unauthorized,
    ValidationFailed,
)
from service.infra.db import utcnow
from service.infra.models import (
    Connection,
    ConnectionStatus,
    ConnectSession,
    ManageSession,
    TeamMember,
)
from service.settings import Environment, Settings, normalized_origin

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


WIDGET_ORIGIN_MAX = 255


def validate_widget_origin(origin: object, settings: Settings) -> str:
    """The origin of the page that opened the connect widget: exactly one of
    RETURN_URL_ALLOWED_ORIGINS (scheme://host[:port], nothing more), since the popup will
    post the outcome to it."""
    if not isinstance(origin, str) or not origin or len(origin) > WIDGET_ORIGIN_MAX:
        raise ValidationFailed("widget_origin must be an origin string", field="widget_origin")
    parts = urlsplit(origin)
    if (
        parts.scheme not in ("http", "https")
        or not parts.netloc
        or f"{parts.scheme}://{parts.netloc}" != origin
    ):
        raise ValidationFailed(
            "widget_origin must be an origin (scheme://host[:port]) with no path",
            field="widget_origin",
        )
    allowed = {o.rstrip("/") for o in settings.RETURN_URL_ALLOWED_ORIGINS}
    if origin not in allowed:
        raise ValidationFailed(
            "widget_origin is not in RETURN_URL_ALLOWED_ORIGINS, so this page cannot be told "
            "the result",
            field="widget_origin",
        )
    return origin


def _serializer(settings: Settings) -> URLSafeSerializer:
    return URLSafeSerializer(settings.SECRET_KEY or "", salt="linksync-connect-session")


def create_connect_session(
    session: Session,
    settings: Settings,
    account_id: object,
    return_url: object = None,
    member_id: object = None,
) -> tuple[ConnectSession, str, str]:
    """Add a connect session (the admin's, or with `member_id` one team member's); return it,
    its signed token and its connect URL. A member id is not checked against the source here:
    the roster may lag behind the integrator's own, and the callback and sync check it."""
    account = validate_account_id(account_id)
    member = None if member_id is None else validate_account_id(member_id, "member_id")
    url = validate_return_url(return_url, settings)
    now = utcnow()
    connect = ConnectSession(
        id=secrets.token_urlsafe(24),
        account_id=account,
        member_id=member,
        return_url=url,
        created_at=now,
        expires_at=now + timedelta(seconds=settings.CONNECT_SESSION_TTL_SECONDS),
    )
    session.add(connect)
    session.flush()
    token = _serializer(settings).dumps(connect.id)
    return connect, token, f"{settings.PUBLIC_URL}/connect/{token}"


def member_connect_link(
    session: Session, settings: Settings, admin: Connection, member_id: str
) -> tuple[str, datetime]:
    """A team member's personal connect link, asked for on the admin's status page:
    (url, expires_at). Reuses the member's newest link while it is still usable for at least
    half its lifetime (a second click mints no new row); otherwise makes a new one."""
    if admin.member_id is not None:
        raise Conflict("Only the team's admin connection hands out personal links.")
    if admin.status == ConnectionStatus.DISCONNECTED:
        raise Conflict("This account is disconnected: connect it again, then share the links.")
    account_id = admin.account_id
    listed = session.scalar(
        select(TeamMember.id).where(
            TeamMember.account_id == account_id, TeamMember.member_id == member_id
        )
    )
    if listed is None:
        raise NotFound(f"{member_id!r} is not a member of this account's team.")
    now = utcnow()
    ttl = timedelta(seconds=settings.CONNECT_SESSION_TTL_SECONDS)
    recent = session.scalar(
        select(ConnectSession)
        .where(
            ConnectSession.account_id == account_id,
            ConnectSession.member_id == member_id,
            ConnectSession.return_url.is_(None),
            ConnectSession.completed_at.is_(None),
            ConnectSession.revoked_at.is_(None),
            ConnectSession.expires_at > now + ttl / 2,
        )
        .order_by(ConnectSession.created_at.desc())
        .limit(1)
    )
    if recent is not None:
        try:
            check_connect_usable(session, settings, recent)
        except Gone:
            recent = None  # the member connected after it was made: it no longer works
    if recent is not None:
        token = _serializer(settings).dumps(recent.id)
        return f"{settings.PUBLIC_URL}/connect/{token}", recent.expires_at
    connect, _token, url = create_connect_session(session, settings, account_id, None, member_id)
    return url, connect.expires_at


def next_step(settings: Settings, account_id: str | None = None, *, manage: bool = False) -> str:
    """What the reader of an expired or used link does next, in words."""
    text = "Open your settings page and use Connect to Close again for a new link."
    if manage:
        text = "Open your settings page again for a new link to this page."
    if settings.LINKSYNC_ENV != Environment.PRODUCTION and account_id:
        flag = " --manage" if manage else ""
        text += f" (Developers: run linksync connect-link {account_id}{flag}.)"
    return text


def load_connect_token(session: Session, settings: Settings, token: str) -> ConnectSession:
    """The connect session behind a token, whatever its state: NotFound if forged or unknown."""
    try:
        session_id = _serializer(settings).loads(token)
    except BadSignature:
        raise NotFound("This connect link is not valid.") from None
    connect = session.get(ConnectSession, session_id) if isinstance(session_id, str) else None
    if connect is None:
        raise NotFound("This connect link is not valid.")
    return connect


def check_connect_usable(
    session: Session, settings: Settings, connect: ConnectSession, *, lock: bool = False
) -> None:
    """Gone unless this connect session may still (re)authorize its account: not withdrawn,
    not used, not expired, and made after the account's current connection (an ACTIVE
    connection is only re-pointed through a link minted for that purpose)."""
    if lock:  # two callbacks of one link at once: the second waits, then sees completed_at
        session.refresh(connect, with_for_update=True)
    step = next_step(settings, connect.account_id)
    if connect.revoked_at is not None:
        raise Gone(f"This connect link was withdrawn. {step}")
    if connect.completed_at is not None:
        raise Gone(f"This connect link was already used. {step}")
    if connect.expires_at <= utcnow():
        raise Gone(f"This connect link has expired. {step}")
    # The connection this link is about: the admin's, or its member's own (not any of them).
    connection = session.scalar(
        select(Connection).where(
            Connection.account_id == connect.account_id,
            Connection.member_id == connect.member_id
            if connect.member_id is not None
            else Connection.member_id.is_(None),
        )
    )
    if (
        connection is not None
        and connection.status == ConnectionStatus.ACTIVE
        and connection.connected_at is not None
        and connection.connected_at >= connect.created_at
    ):
        raise Gone(
            f"This account was connected after this link was made, so it is no longer valid. {step}"
        )


def resolve_connect_token(session: Session, settings: Settings, token: str) -> ConnectSession:
    """The usable connect session behind a token: NotFound if forged, Gone if not usable."""
    connect = load_connect_token(session, settings, token)
    check_connect_usable(session, settings, connect)
    return connect


def revoke_connect_token(session: Session, settings: Settings, token: str) -> None:
    """Withdraw a connect link (idempotent): its page and any sign-in it started stop working."""
    connect = load_connect_token(session, settings, token)
    if connect.revoked_at is None:
        connect.revoked_at = utcnow()
    session.flush()


def connect_token_for(settings: Settings, connect_session_id: str) -> str:
    """The signed token of an existing connect session (to link back to its page)."""
    return str(_serializer(settings).dumps(connect_session_id))


# Manage sessions ---------------------------------------------------------------------------


def _manage_serializer(settings: Settings) -> URLSafeSerializer:
    return URLSafeSerializer(settings.SECRET_KEY or "", salt="linksync-manage-link")


def _revoke_manage_sessions(session: Session, connection_id: int, now: datetime) -> None:
    session.execute(
        update(ManageSession)
        .where(ManageSession.connection_id == connection_id, ManageSession.revoked_at.is_(None))
        .values(revoked_at=now)
    )


def grant_manage_session(
    session: Session, settings: Settings, connection: Connection, browser_binding: str
) -> ManageSession:
    """Give this browser the status view of `connection`; every other browser's access to it
    ends (a connect or a disconnect changes who manages the connection)."""
    now = utcnow()
    _revoke_manage_sessions(session, connection.id, now)
    manage = ManageSession(
        id=secrets.token_urlsafe(24),
        connection_id=connection.id,
        browser_binding=browser_binding,
        created_at=now,
        claimed_at=now,
        expires_at=now + timedelta(seconds=settings.MANAGE_SESSION_TTL_SECONDS),
    )
    session.add(manage)
    session.flush()
    return manage


def complete_connect_session(
    session: Session,
    settings: Settings,
    connect: ConnectSession,
    connection: Connection,
    browser_binding: str,
) -> ManageSession:
    """The callback of `connect` succeeded: the link is used up, and this browser manages."""
    connect.completed_at = utcnow()
    return grant_manage_session(session, settings, connection, browser_binding)


def mint_manage_link(
    session: Session, settings: Settings, connection: Connection
) -> tuple[ManageSession, str]:
    """A one-time link to the status view: the first browser to open it (within
    CONNECT_SESSION_TTL_SECONDS) gets a manage session; afterwards the URL is useless."""
    now = utcnow()
    manage = ManageSession(
        id=secrets.token_urlsafe(24),
        connection_id=connection.id,
        created_at=now,
        expires_at=now + timedelta(seconds=settings.CONNECT_SESSION_TTL_SECONDS),
    )
    session.add(manage)
    session.flush()
    token = _manage_serializer(settings).dumps(manage.id)
    return manage, f"{settings.PUBLIC_URL}/manage/{token}"


def claim_manage_link(
    session: Session, settings: Settings, token: str, browser_binding: str
) -> ManageSession:
    """Open a manage link in this browser (again, if this browser already claimed it)."""
    try:
        manage_id = _manage_serializer(settings).loads(token)
    except BadSignature:
        raise NotFound("This link is not valid.") from None
    manage = (
        session.get(ManageSession, manage_id, with_for_update=True)
        if isinstance(manage_id, str)
        else None
    )
    if manage is None:
        raise NotFound("This link is not valid.")
    if manage.browser_binding is not None:
        if hmac.compare_digest(manage.browser_binding, browser_binding):
            return manage  # the same browser, reopening its link: the checks below apply
        connection = session.get(Connection, manage.connection_id)
        account = connection.account_id if connection else None
        raise Gone(
            "This link was already opened in another browser. "
            + next_step(settings, account, manage=True)
        )
    connection = session.get(Connection, manage.connection_id)
    account = connection.account_id if connection else None
    if manage.revoked_at is not None or manage.expires_at <= utcnow():
        raise Gone("This link has expired. " + next_step(settings, account, manage=True))
    now = utcnow()
    manage.browser_binding = browser_binding
    manage.claimed_at = now
    manage.expires_at = now + timedelta(seconds=settings.MANAGE_SESSION_TTL_SECONDS)
    session.flush()
    return manage


def manage_session_connection(
    session: Session, settings: Settings, manage_id: object, browser_binding: object
) -> Connection:
    """The connection this browser manages: Unauthorized when it has no access, Gone when
    its access ended (expired, revoked, or the connection was disconnected elsewhere)."""
    manage = (
        session.get(ManageSession, manage_id) if isinstance(manage_id, str) and manage_id else None
    )
    if (
        manage is None
        or manage.browser_binding is None
        or not isinstance(browser_binding, str)
        or not hmac.compare_digest(manage.browser_binding, browser_binding)
    ):
        raise Unauthorized(
            "This browser has no access to a Close connection's status. "
            "Open it from your settings page."
        )
    connection = session.get(Connection, manage.connection_id)
    if connection is None:
        raise Unauthorized("This connection no longer exists. Open your settings page again.")
    ended = (
        manage.revoked_at is not None
        or manage.expires_at <= utcnow()
        or (
            connection.disconnected_at is not None
            and connection.disconnected_at >= manage.created_at
        )
    )
    if ended:
        raise Gone(
            "Your access to this status page has ended. "
            + next_step(settings, connection.account_id, manage=True)
        )
    return connection


def has_manage_session(
    session: Session,
    settings: Settings,
    manage_id: object,
    browser_binding: object,
    account_id: str,
) -> bool:
    """Does this browser manage `account_id` right now?"""
    try:
        connection = manage_session_connection(session, settings, manage_id, browser_binding)
    except DomainError:
        return False
    return connection.account_id == account_id
