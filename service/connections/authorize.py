"""The OAuth authorization-code flow with Close, from the Connect button to a stored connection.

`state` is random, single-use, short-lived, and bound both to the browser (a random value in
the session cookie) and to the connect session; a callback that fails any check stores nothing.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from service.close.client import CloseClient, CloseError, StaticToken
from service.close.oauth import OAuthFailure
from service.close.tokens import NeedsReauth, NotConnected, TokenRefreshUnavailable, store_tokens
from service.connections.disconnect import remove_close_links
from service.errors import DomainError, Gone, UpstreamUnavailable, ValidationFailed
from service.infra.db import utcnow
from service.infra.models import (
    Connection,
    ConnectionStatus,
    ConnectSession,
    OAuthState,
    SyncedLink,
    TeamMember,
    Trigger,
)
from service.services import Services
from service.sync.team import normalize_email
from service.sync.triggers import request_sync

log = logging.getLogger(__name__)

STATE_TTL = timedelta(minutes=10)
STATE_FORMAT = re.compile(r"[A-Za-z0-9_-]{16,128}")  # what secrets.token_urlsafe makes


class ConsentDeclined(DomainError):
    status = 400
    code = "access_denied"


class WrongOrganization(DomainError):
    """A member chose another Close org than the account's admin connection is in."""

    status = 409
    code = "wrong_organization"


def begin_authorization(
    session: Session, svc: Services, connect: ConnectSession, browser_binding: str
) -> str:
    state = secrets.token_urlsafe(32)
    now = utcnow()
    session.add(
        OAuthState(
            state=state,
            connect_session_id=connect.id,
            browser_binding=browser_binding,
            created_at=now,
            expires_at=now + STATE_TTL,
        )
    )
    session.flush()
    return svc.oauth.authorization_url(state)


def check_state(
    session: Session, state: str | None, browser_binding: str | None
) -> tuple[OAuthState, ConnectSession]:
    """Validate and consume the state; raise a friendly error otherwise (nothing stored)."""
    if not state:
        raise ValidationFailed(
            "This sign-in link is incomplete (no state). Start again from the connect page."
        )
    pending = (
        session.get(OAuthState, state, with_for_update=True)
        if STATE_FORMAT.fullmatch(state)
        else None
    )
    if (
        pending is None
        or not browser_binding
        or not hmac.compare_digest(pending.browser_binding, browser_binding)
    ):
        raise ValidationFailed(
            "This sign-in did not start in this browser, or the link was altered. "
            "Start again from the connect page."
        )
    if pending.used_at is not None:
        raise ValidationFailed(
            "This sign-in link was already used. Start again from the connect page."
        )
    if pending.expires_at <= utcnow():
        raise ValidationFailed(
            "This sign-in took too long and expired. Start again from the connect page."
        )
    pending.used_at = utcnow()  # replay protection, committed with whatever follows
    connect = session.get(ConnectSession, pending.connect_session_id)
    if connect is None or connect.expires_at <= utcnow():
        raise Gone("This connect link has expired. Ask for a new one from your settings page.")
    return pending, connect


def complete_authorization(
    session: Session,
    svc: Services,
    *,
    connect: ConnectSession,
    code: str | None,
    error: str | None,
) -> Connection:
    if error == "access_denied":
        raise ConsentDeclined("You declined access, so nothing was connected.")
    if error:
        raise ValidationFailed(
            f"Close could not complete the sign-in ({error[:100]}). Please try again."
        )
    if not code:
        raise ValidationFailed("Close did not send an authorization code. Please try again.")
    try:
        tokens = svc.oauth.exchange_code(code)
    except OAuthFailure as exc:
        if exc.error == "invalid_grant":
            raise ValidationFailed(
                "This authorization code is no longer valid (it was used or expired). Please try again."
            ) from None
        raise UpstreamUnavailable(
            "Close could not be reached to finish connecting. Please try again."
        ) from None
    org_id = tokens.organization_id or ""
    close = CloseClient(
        api_url=svc.settings.close_url("CLOSE_API_URL"),
        http=svc._http,
        budget=svc.budget,
        tokens=StaticToken(tokens.access_token),
        org_id=org_id or "unknown",
        token_key=f"new:{tokens.user_id}",
        timeout=svc.settings.CLOSE_TIMEOUT_SECONDS,
    )
    try:
        me = close.me()
    except CloseError:
        raise UpstreamUnavailable(
            "Close could not be reached to finish connecting. Please try again."
        ) from None
    user_id = str(me.get("id") or tokens.user_id or "")
    org_name = next(
        (o.get("name") for o in me.get("organizations") or [] if o.get("id") == org_id), None
    )
    email_warning = None
    if connect.member_id is not None:
        email_warning = _check_member(session, connect, org_id, org_name, user_id, me)
    connection = session.scalar(
        select(Connection).where(
            Connection.account_id == connect.account_id,
            Connection.member_id == connect.member_id
            if connect.member_id is not None
            else Connection.member_id.is_(None),
        )
    )
    if connection is None:
        connection = Connection(
            account_id=connect.account_id, member_id=connect.member_id, token_generation=0
        )
        session.add(connection)
    elif connection.close_user_id and connection.close_user_id != user_id:
        _leave_previous_user(session, svc, connection)
    now = utcnow()
    connection.status = ConnectionStatus.ACTIVE
    connection.status_reason = None
    connection.close_user_id = user_id
    connection.close_user_name = (
        " ".join(part for part in (me.get("first_name"), me.get("last_name")) if part) or None
    )
    connection.close_user_email = me.get("email")
    connection.email_warning = email_warning
    connection.close_org_id = org_id
    connection.close_org_name = org_name
    connection.connected_at = now
    connection.disconnected_at = None
    connection.source_etag = None
    connection.next_sync_at = now + timedelta(seconds=svc.settings.SYNC_INTERVAL_SECONDS)
    store_tokens(connection, tokens, svc.cipher, svc.settings.TOKEN_REFRESH_MARGIN_SECONDS)
    session.flush()
    request_sync(session, svc, connection, Trigger.CONNECT)
    return connection


def _check_member(
    session: Session,
    connect: ConnectSession,
    org_id: str,
    org_name: str | None,
    user_id: str,
    me: dict[str, object],
) -> str | None:
    """A member connects into the admin connection's Close org, as a user other than the
    admin's. Returns the warning to show when the Close email is not the member's."""
    admin = session.scalar(
        select(Connection).where(
            Connection.account_id == connect.account_id, Connection.member_id.is_(None)
        )
    )
    if admin is None or admin.status == ConnectionStatus.DISCONNECTED or not admin.close_org_id:
        raise WrongOrganization(
            "Your team's admin has not connected Close yet, so there is no team organization "
            "to join. Ask them to connect first, then use your link again."
        )
    if org_id != admin.close_org_id:
        raise WrongOrganization(
            f"You chose the Close organization {org_name or org_id!r}, but your team is "
            f"connected to {admin.close_org_name or admin.close_org_id!r}. Use your link "
            f"again and pick {admin.close_org_name or 'that organization'} on Close's screen."
        )
    if user_id == admin.close_user_id:
        raise WrongOrganization(
            "You signed in as the Close user your team's admin connected with; that user's "
            "links already sync through the admin connection. Sign in to Close as yourself."
        )
    member = session.scalar(
        select(TeamMember).where(
            TeamMember.account_id == connect.account_id,
            TeamMember.member_id == connect.member_id,
        )
    )
    email = me.get("email")
    if (
        member is not None
        and member.email
        and normalize_email(member.email) != normalize_email(email)
    ):
        return (
            f"Connected as {email}, but this member's email here is {member.email.strip()}: "
            "check that the right Close user was chosen."
        )
    return None


def _leave_previous_user(session: Session, svc: Services, connection: Connection) -> None:
    """The account now connects as another Close user: remove the old user's links of ours
    first (with the old, still-stored tokens), then forget them."""
    if (
        connection.status in (ConnectionStatus.ACTIVE, ConnectionStatus.PAUSED)
        and connection.refresh_token_enc
    ):
        try:
            remove_close_links(svc, connection.id, session)
        except (NeedsReauth, NotConnected, TokenRefreshUnavailable, CloseError) as exc:
            log.warning(
                "could not remove the previous user's links",
                extra={"connection_id": connection.id, "reason": type(exc).__name__},
            )
    session.execute(delete(SyncedLink).where(SyncedLink.connection_id == connection.id))
    session.expire(connection)
