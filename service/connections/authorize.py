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

from sqlalchemy import delete, event, select
from sqlalchemy.orm import Session

from service.close.client import CloseClient, CloseError, StaticToken
from service.close.oauth import OAuthFailure
from service.close.tokens import NeedsReauth, NotConnected, TokenRefreshUnavailable, store_tokens
from service.connections.disconnect import remove_close_links
from service.connections.sessions import (
    check_connect_usable,
    complete_connect_session,
    create_connect_session,
)
from service.errors import Conflict, DomainError, Gone, UpstreamUnavailable, ValidationFailed
from service.infra import outbox
from service.infra.crypto import TokenDecryptError
from service.infra.db import utcnow
from service.infra.models import (
    Connection,
    ConnectionStatus,
    ConnectSession,
    ManageSession,
    OAuthState,
    SyncedLink,
    TeamMember,
    Trigger,
)
from service.services import Services
from service.settings import Settings
from service.sync import coverage as team_coverage
from service.sync.team import normalize_email
from service.sync.triggers import request_sync

log = logging.getLogger(__name__)

STATE_TTL = timedelta(minutes=10)
STATE_FORMAT = re.compile(r"[A-Za-z0-9_-]{16,128}")  # what secrets.token_urlsafe makes


class ConsentDeclined(DomainError):
    status = 400
    code = "access_denied"


class CloseUserTaken(Conflict):
    """The Close user is already connected to another integrator account."""

    code = "close_user_already_connected"


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


class CallbackReplayed(Exception):
    """The browser reloaded the callback of a flow it completed: send it to its status view."""


def check_state(
    session: Session, settings: Settings, state: str | None, browser_binding: str | None
) -> tuple[OAuthState, ConnectSession]:
    """Validate and consume the state; raise a friendly error otherwise (nothing stored), or
    CallbackReplayed when this browser reloads the callback of its completed connect."""
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
        if _completed_here(session, pending):
            raise CallbackReplayed()
        raise ValidationFailed(
            "This sign-in link was already used. Start again from the connect page."
        )
    if pending.expires_at <= utcnow():
        raise ValidationFailed(
            "This sign-in took too long and expired. Start again from the connect page."
        )
    pending.used_at = utcnow()  # replay protection, committed with whatever follows
    connect = session.get(ConnectSession, pending.connect_session_id)
    if connect is None:
        raise Gone(
            "This connect link is no longer valid. Ask for a new one from your settings page."
        )
    check_connect_usable(session, settings, connect, lock=True)
    return pending, connect


def _completed_here(session: Session, pending: OAuthState) -> bool:
    """A used state of this browser whose connect session completed, with the connection
    still active: a reload of the callback after success (or the Back button)."""
    connect = session.get(ConnectSession, pending.connect_session_id)
    if connect is None or connect.completed_at is None:
        return False
    connection = session.scalar(
        select(Connection).where(
            Connection.account_id == connect.account_id,
            Connection.member_id == connect.member_id
            if connect.member_id is not None
            else Connection.member_id.is_(None),
        )
    )
    return connection is not None and connection.status == ConnectionStatus.ACTIVE


def finish_authorization(
    session: Session,
    svc: Services,
    *,
    connect: ConnectSession,
    code: str | None,
    error: str | None,
    browser_binding: str,
) -> tuple[Connection, ManageSession]:
    """Complete the flow, use up the connect link, and let this browser manage the result."""
    connection = complete_authorization(session, svc, connect=connect, code=code, error=error)
    manage = complete_connect_session(session, svc.settings, connect, connection, browser_binding)
    return connection, manage


def begin_reconnect(
    session: Session, svc: Services, connection: Connection, browser_binding: str
) -> str:
    """Reconnect from the status view (the manage session vouches for the admin): a fresh,
    one-time connect session for this flow, and Close's authorize URL."""
    connect, _token, _url = create_connect_session(session, svc.settings, connection.account_id)
    return begin_authorization(session, svc, connect, browser_binding)


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
    org_name = _org_name(me, org_id)
    holder = _other_account_holding(session, user_id, connect.account_id)
    if holder is not None:
        # Two accounts syncing one Close user would fight over its links: refuse, store
        # nothing, and give back the grant just made (the holder's own grant is another one).
        _revoke_quietly(svc, tokens.refresh_token, reason="refused second account")
        who = me.get("email") or user_id
        raise CloseUserTaken(
            f"The Close user {who} is already connected to the account {holder!r}. "
            "Disconnect it there first, or sign in to Close as another user. "
            "Nothing was changed."
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
    previous_refresh: str | None = None
    was_active = connection is not None and connection.status == ConnectionStatus.ACTIVE
    if connection is None:
        connection = Connection(
            account_id=connect.account_id, member_id=connect.member_id, token_generation=0
        )
        session.add(connection)
    else:
        previous_refresh = connection.refresh_token_enc
        if connection.close_user_id and (
            connection.close_user_id != user_id or connection.close_org_id != org_id
        ):
            # Another user, or the same user in another org: the old links belong to a link
            # set this connection no longer syncs.
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
    connection.next_reconcile_at = None  # the first sync after a connect is a reconcile
    connection.next_sync_at = now + timedelta(seconds=svc.settings.SYNC_INTERVAL_SECONDS)
    store_tokens(connection, tokens, svc.cipher, svc.settings.TOKEN_REFRESH_MARGIN_SECONDS)
    outbox.record_connected(session, connection)  # before the flush: the row tells new or known
    session.flush()
    if connect.member_id is not None and not was_active:
        team_coverage.record_changed(
            session,
            connect.account_id,
            {connect.member_id: team_coverage.Change.CONNECTED},
            connection_id=connection.id,
        )
    if previous_refresh:
        _revoke_after_commit(session, svc, previous_refresh, connection.id)
    request_sync(session, svc, connection, Trigger.CONNECT)
    return connection


def _org_name(me: dict[str, object], org_id: str) -> str | None:
    """The org's name from `/me/`'s `organizations`: full objects, as Close documents, or
    plain ids (then no name)."""
    organizations = me.get("organizations")
    if not isinstance(organizations, list):
        return None
    for org in organizations:
        if isinstance(org, dict) and org.get("id") == org_id:
            name = org.get("name")
            return name if isinstance(name, str) else None
    return None


def _other_account_holding(session: Session, close_user_id: str, account_id: str) -> str | None:
    """The account id of another live connection of this Close user, if any."""
    return session.scalar(
        select(Connection.account_id)
        .where(
            Connection.close_user_id == close_user_id,
            Connection.account_id != account_id,
            Connection.status != ConnectionStatus.DISCONNECTED,
        )
        .order_by(Connection.id)
        .limit(1)
    )


def _revoke_after_commit(
    session: Session, svc: Services, refresh_token_enc: str, connection_id: int
) -> None:
    """Revoke the grant a re-authorization replaced, once the new tokens are committed (a
    rollback keeps the old grant, which is then still the stored one)."""

    def revoke(_session: Session) -> None:
        try:
            token = svc.cipher.decrypt(refresh_token_enc)
        except TokenDecryptError:
            return
        _revoke_quietly(svc, token, reason="previous grant", connection_id=connection_id)

    event.listen(session, "after_commit", revoke, once=True)


def _revoke_quietly(
    svc: Services, refresh_token: str, *, reason: str, connection_id: int | None = None
) -> None:
    try:
        svc.oauth.revoke(refresh_token)
    except OAuthFailure as exc:
        log.warning(
            "revoking a Close grant failed",
            extra={"connection_id": connection_id, "grant": reason, "reason": exc.error},
        )


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
