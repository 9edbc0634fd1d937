"""The integrator API's routes (/api/v1). Views parse, call one service function, serialize;
the registry in service.api.routing does the parsing, checking and documenting."""

from __future__ import annotations

from flask import Response

from service.api.routing import route
from service.api.schemas import (
    CloseOrganization,
    CloseUser,
    ConnectionOut,
    ConnectSessionIn,
    ConnectSessionOut,
    CoverageOut,
    DisconnectQuery,
    LastSync,
    LinkCounts,
    LinkOut,
    LinkPage,
    LinksQuery,
    ManageLinkOut,
    MemberConnectionOut,
    RunCounts,
    RunProgress,
    SyncIn,
    SyncQueued,
    SyncRunOut,
)
from service.connections import queries
from service.connections.disconnect import disconnect
from service.connections.queries import get_connection
from service.connections.sessions import (
    create_connect_session,
    mint_manage_link,
    revoke_connect_token,
)
from service.infra.models import Connection, ConnectionStatus, SyncedLink, Trigger
from service.sync.triggers import request_sync
from service.web.context import db_session, services


def connection_out(connection: Connection, counts: dict[str, int]) -> ConnectionOut:
    return ConnectionOut(
        account_id=connection.account_id,
        status=ConnectionStatus(connection.status).value,
        status_reason=connection.status_reason,
        close_user=CloseUser(
            id=connection.close_user_id,
            name=connection.close_user_name,
            email=connection.close_user_email,
        ),
        close_organization=CloseOrganization(
            id=connection.close_org_id, name=connection.close_org_name
        ),
        links=LinkCounts(
            total=sum(counts.values()),
            synced=counts.get("synced", 0),
            pending=counts.get("pending", 0),
            error=counts.get("error", 0),
            deleting=counts.get("deleting", 0),
        ),
        last_sync=LastSync(
            at=connection.last_sync_at,
            status=connection.last_sync_status,
            run_id=connection.last_sync_run_id,
        )
        if connection.last_sync_run_id
        else None,
        connected_at=connection.connected_at,
        disconnected_at=connection.disconnected_at,
        next_sync_at=connection.next_sync_at,
    )


def member_connection_out(connection: Connection, counts: dict[str, int]) -> MemberConnectionOut:
    return MemberConnectionOut(
        **connection_out(connection, counts).model_dump(),
        member_id=connection.member_id or "",
        email_warning=connection.email_warning,
    )


def link_out(link: SyncedLink) -> LinkOut:
    return LinkOut(
        source_id=link.source_id,
        name=link.name,
        url=link.url,
        state=link.state,  # type: ignore[arg-type]  # a LinkState value
        close_link_id=link.close_link_id,
        last_error=link.last_error,
        last_synced_at=link.last_synced_at,
    )


# Routes ---------------------------------------------------------------------------------


@route(
    "POST",
    "/connect-sessions",
    summary="Create a connect session: a short-lived link for one account's admin, or (with "
    "member_id) for one team member",
    body=ConnectSessionIn,
    responses={201: ConnectSessionOut},
)
def create_session(body: ConnectSessionIn) -> ConnectSessionOut:
    session = db_session()
    connect, token, url = create_connect_session(
        session, services().settings, body.account_id, body.return_url, body.member_id
    )
    session.commit()
    return ConnectSessionOut(token=token, connect_url=url, expires_at=connect.expires_at)


@route(
    "DELETE",
    "/connect-sessions/{token}",
    summary="Withdraw a connect link: its page and any sign-in it started stop working",
    description="Idempotent. A link already used stays used; a connection it made stays.",
    responses={204: None},
)
def delete_session(token: str) -> Response:
    session = db_session()
    revoke_connect_token(session, services().settings, token)
    session.commit()
    return Response(status=204)


@route(
    "POST",
    "/accounts/{account_id}/manage-link",
    summary="Mint a one-time link to the account's status page (Sync now, Disconnect)",
    description=(
        "The first browser to open the link before expires_at keeps the status view for "
        "MANAGE_SESSION_TTL_SECONDS; the URL is useless to anyone else afterwards. Works for "
        "any status, including disconnected (the page then offers to connect again)."
    ),
    responses={201: ManageLinkOut},
)
def create_manage_link(account_id: str) -> ManageLinkOut:
    session = db_session()
    connection = get_connection(session, account_id)
    manage, url = mint_manage_link(session, services().settings, connection)
    session.commit()
    return ManageLinkOut(url=url, expires_at=manage.expires_at)


@route(
    "GET",
    "/accounts/{account_id}/connection",
    summary="Connection status, Close user and organization, link counts, last sync",
    responses={200: ConnectionOut},
)
def get_status(account_id: str) -> ConnectionOut:
    session = db_session()
    connection = get_connection(session, account_id)
    return connection_out(connection, queries.link_counts(session, connection.id))


@route(
    "GET",
    "/accounts/{account_id}/links",
    summary="The account's synced links with their state and last error, in pages",
    query=LinksQuery,
    responses={200: LinkPage},
)
def list_links(account_id: str, query: LinksQuery) -> LinkPage:
    session = db_session()
    connection = get_connection(session, account_id)
    rows, next_id = queries.links_page(
        session, connection.id, after_id=int(query.cursor), limit=query.limit
    )
    return LinkPage(
        data=[link_out(row) for row in rows],
        next_cursor=str(next_id) if next_id is not None else None,
    )


@route(
    "POST",
    "/accounts/{account_id}/sync",
    summary="Queue a resync now; poll the run with GET /api/v1/sync-runs/{id}",
    description='Optional body {"reconcile": true}: also repair drift in Close (the run\'s '
    "trigger is then reconcile). An empty body, with or without a Content-Type, is a resync.",
    body=SyncIn,
    body_required=False,
    responses={202: SyncQueued},
    errors=(409, 503),
)
def trigger_sync(account_id: str, body: SyncIn | None) -> SyncQueued:
    session = db_session()
    connection = get_connection(session, account_id)
    trigger = Trigger.RECONCILE if body is not None and body.reconcile else Trigger.MANUAL
    run = request_sync(session, services(), connection, trigger)
    session.commit()  # the request is durable now; the wake-up is sent after this commit
    return SyncQueued(run_id=run.id, status="queued")


@route(
    "GET",
    "/sync-runs/{run_id}",
    summary="One sync run: trigger, timing, counts, progress, error",
    responses={200: SyncRunOut},
)
def get_run(run_id: int) -> SyncRunOut:
    run, account_id = queries.sync_run(db_session(), run_id)
    duration = (
        (run.finished_at - run.started_at).total_seconds()
        if run.finished_at and run.started_at
        else None
    )
    return SyncRunOut(
        id=run.id,
        account_id=account_id,
        trigger=run.trigger,
        status=run.status,  # type: ignore[arg-type]  # a RunStatus value
        queued_at=run.queued_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
        duration_seconds=duration,
        counts=RunCounts(
            created=run.created,
            updated=run.updated,
            deleted=run.deleted,
            unchanged=run.unchanged,
            failed=run.failed,
        ),
        progress=RunProgress(done=run.progress_done, total=run.progress_total),
        error=run.error,
    )


@route(
    "DELETE",
    "/accounts/{account_id}/connection",
    summary="Disconnect: remove our links from Close (unless keep_links), revoke, wipe tokens",
    description="Idempotent. The connection stays as a record with status disconnected.",
    query=DisconnectQuery,
    responses={200: ConnectionOut},
    errors=(409, 503),
)
def delete_connection(account_id: str, query: DisconnectQuery) -> ConnectionOut:
    session = db_session()
    connection_id = get_connection(session, account_id).id
    # Calling Close can take a while: hold no transaction or pooled connection meanwhile.
    session.close()
    connection = disconnect(services(), connection_id, keep_links=query.keep_links in ("true", "1"))
    return connection_out(connection, queries.link_counts(session, connection.id))


@route(
    "GET",
    "/accounts/{account_id}/members/{member_id}/connection",
    summary="A team member's own connection: status, Close user, link counts, last sync",
    responses={200: MemberConnectionOut},
)
def get_member_status(account_id: str, member_id: str) -> MemberConnectionOut:
    session = db_session()
    connection = queries.get_member_connection(session, account_id, member_id)
    return member_connection_out(connection, queries.link_counts(session, connection.id))


@route(
    "DELETE",
    "/accounts/{account_id}/members/{member_id}/connection",
    summary="Disconnect a team member: remove their links (unless keep_links), revoke",
    description="Idempotent. The admin connection and the other members are not touched.",
    query=DisconnectQuery,
    responses={200: MemberConnectionOut},
    errors=(409, 503),
)
def delete_member_connection(
    account_id: str, member_id: str, query: DisconnectQuery
) -> MemberConnectionOut:
    session = db_session()
    connection_id = queries.get_member_connection(session, account_id, member_id).id
    session.close()
    connection = disconnect(services(), connection_id, keep_links=query.keep_links in ("true", "1"))
    return member_connection_out(connection, queries.link_counts(session, connection.id))


@route(
    "GET",
    "/accounts/{account_id}/coverage",
    summary='Team coverage: per member the Close user, connection, links and shared mappings; "covered N of M"',
    responses={200: CoverageOut},
)
def get_coverage(account_id: str) -> CoverageOut:
    return CoverageOut.model_validate(queries.coverage(db_session(), account_id))
