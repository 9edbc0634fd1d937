"""One sync run of one connection: read the source, plan, apply to Close, record per link.

State is saved per link as Close confirms it (in small batches), so a crash half-way loses
nothing: the next run recomputes the plan and does only what is still missing. Every write to
Close is idempotent (upsert keyed by source_id; delete by source_id, 404 = already gone), so a
retried or repeated call never duplicates a link.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from service.close.client import (
    CloseAuthError,
    CloseClient,
    CloseError,
    CloseForbidden,
    CloseValidationError,
)
from service.close.tokens import NeedsReauth, NotConnected, TokenRefreshUnavailable
from service.infra import logs, metrics, outbox
from service.infra.db import utcnow
from service.infra.models import (
    Connection,
    ConnectionStatus,
    LinkState,
    RunStatus,
    SharedLink,
    SharedLinkMapping,
    SyncedLink,
    SyncRun,
    TeamMember,
    Trigger,
)
from service.services import Services
from service.source.client import SourceAccountGone, SourceClient, SourceUnavailable
from service.sync import coverage, team
from service.sync.diff import KnownLink, Plan, plan
from service.sync.mapping import DesiredLink, InvalidLink, is_active, map_event_type, source_id_of

log = logging.getLogger(__name__)
K = TypeVar("K")

CHECKPOINT_EVERY = 25  # links
CHECKPOINT_SECONDS = 1.0
FATAL = (NeedsReauth, NotConnected)
# Answers that will be the same for every other link of this connection: stop the run.
ACCESS_REFUSED_STATUSES = (401, 402, 403)
ACCESS_REFUSED_PREFIX = "Close refused this connection's calls"


def refuses_access(exc: BaseException) -> bool:
    """A 401 that outlived one refresh, a 402 (billing) or a 403 (permission)."""
    return isinstance(exc, CloseAuthError | CloseForbidden) or (
        isinstance(exc, CloseError) and exc.status in ACCESS_REFUSED_STATUSES
    )


@dataclass
class Outcome:
    created: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    failed: int = 0
    transient: int = 0  # failures worth retrying in a later run
    errors: list[str] = field(default_factory=list)
    fatal: str | None = None
    access_refused: str | None = None  # recorded on the connection's status_reason


@dataclass
class Team:
    """The account's roster for this run: member id → email (empty: no team)."""

    members: dict[str, str | None] = field(default_factory=dict)
    complete: bool = True
    error: str | None = None
    managed: list[dict[str, Any]] = field(default_factory=list)  # active managed types listed

    @property
    def present(self) -> bool:
        return bool(self.members)


MANAGE_CUSTOMIZATIONS = "manage_customizations"
NO_SHARED_PERMISSION = (
    "the connected Close user lacks the Manage Customizations permission in this organization, "
    "so no shared links are created"
)


@dataclass(frozen=True)
class EngineConfig:
    close_client_id: str  # our OAuth app: reconcile only ever considers its links
    concurrency: int  # Close calls in flight per run
    reconcile_interval: float  # seconds between reconciles of one connection
    events_sync_completed: bool = False  # INTEGRATOR_EVENTS_SYNC_COMPLETED


class SyncEngine:
    """Runs one sync of one connection with the collaborators it is given: a session factory,
    a Close client per connection (which carries the org's shared rate budget), the source."""

    def __init__(
        self,
        *,
        sessions: Callable[[], Session],
        close_for: Callable[[Connection], CloseClient],
        source: SourceClient,
        config: EngineConfig,
        on_progress: Callable[[int, int], None] | None = None,
        on_phase: Callable[[str, int], None] | None = None,
    ) -> None:
        """`on_phase(phase, total)` is told when a phase starts: "reconcile" (listing Close's
        links), "read" (the source) and "apply" with the number of changes (0: none)."""
        self.sessions = sessions
        self.close_for = close_for
        self.source = source
        self.config = config
        self.on_progress = on_progress
        self.on_phase = on_phase

    def run(self, connection_id: int, run_id: int, *, reconcile: bool = False) -> SyncRun:
        started = time.monotonic()
        session = self.sessions()
        try:
            run = session.get(SyncRun, run_id)
            connection = session.get(Connection, connection_id)
            if run is None or connection is None:
                raise LookupError(f"run {run_id} or connection {connection_id} not found")
            logs.bind(connection_id=connection.id, account_id=connection.account_id, run_id=run.id)
            # A connect (new grant, maybe new user or org) and an asked-for repair list Close.
            reconcile = reconcile or run.trigger in (Trigger.CONNECT, Trigger.RECONCILE)
            run.status = RunStatus.RUNNING
            run.started_at = utcnow()
            session.commit()
            outcome = Outcome()
            try:
                status, error = self._run(session, connection, run, outcome, reconcile=reconcile)
            except Exception as exc:
                session.rollback()
                log.exception("sync run crashed", extra={"run_id": run_id})
                status, error = RunStatus.FAILED, f"internal error: {type(exc).__name__}"
            self._finish(session, connection, run, outcome, status, error, reconcile)
            metrics.SYNC_RUNS.labels(run.trigger, run.status).inc()
            metrics.SYNC_DURATION.observe(time.monotonic() - started)
            return run
        finally:
            session.close()

    # The run ----------------------------------------------------------------------------

    def _run(
        self,
        session: Session,
        connection: Connection,
        run: SyncRun,
        outcome: Outcome,
        *,
        reconcile: bool,
    ) -> tuple[RunStatus, str | None]:
        if not connection.syncable:
            return RunStatus.FAILED, f"connection is {connection.status}"
        close = self.close_for(connection)
        rows = {
            row.source_id: row
            for row in session.scalars(
                select(SyncedLink).where(SyncedLink.connection_id == connection.id)
            )
        }
        if reconcile:
            self._phase("reconcile")
            try:
                self._reconcile(session, connection, close, rows)
            except FATAL as exc:
                return RunStatus.FAILED, str(exc)
            except (CloseError, TokenRefreshUnavailable) as exc:
                return RunStatus.FAILED, f"reconcile could not list Close's links: {exc}"

        dirty = any(
            row.state != LinkState.SYNCED and row.state != LinkState.ERROR for row in rows.values()
        )
        roster = self._roster(session, connection)
        # A team's shared links and member scopes depend on more than the event-type listing
        # (the roster, who has connected), so a team account always reads the full listing.
        etag = None if (reconcile or dirty or roster.present) else connection.source_etag
        self._phase("read")
        try:
            listing = self.source.listing(connection.account_id, etag=etag)
        except SourceAccountGone:
            connection.status = ConnectionStatus.PAUSED
            connection.status_reason = (
                "the source says this account does not exist (404); syncing is paused and "
                "no links were deleted"
            )
            outbox.record_status(session, connection, outbox.EventType.CONNECTION_PAUSED)
            return RunStatus.FAILED, "source account not found (404): connection paused"
        except SourceUnavailable as exc:
            return RunStatus.FAILED, str(exc)
        if listing.not_modified:
            outcome.unchanged = len(rows)
            self._phase("apply", 0)
            return RunStatus.SUCCEEDED, None

        scope = None
        if roster.present:
            scope = (
                team.member_scope(connection.member_id)
                if connection.member_id is not None
                else team.admin_scope(connection.close_user_email, roster.members)
            )
            if connection.member_id is not None and connection.member_id not in roster.members:
                scope = team.Scope(member_id=None, account_level=False)  # no longer on the team
        desired, invalid = self._read(listing, outcome, scope, roster)
        complete = listing.complete and (roster.complete or scope is None)
        the_plan = plan(
            desired,
            invalid,
            {
                sid: KnownLink(sid, row.content_hash, row.may_be_in_close)
                for sid, row in rows.items()
            },
            listing_complete=complete,
        )
        outcome.unchanged = len(the_plan.unchanged)
        self._record_invalid(session, connection, rows, the_plan.invalid, outcome)
        self._forget_unwanted(session, connection, rows, desired, invalid, complete)
        run.progress_total = len(the_plan.upserts) + len(the_plan.deletes)
        session.commit()
        self._phase("apply", run.progress_total)

        self._apply(session, connection, run, close, rows, the_plan, outcome)

        if outcome.fatal:
            return RunStatus.FAILED, outcome.fatal
        if connection.member_id is None and (
            roster.present or self._has_shared(session, connection)
        ):
            self._sync_shared(session, connection, close, roster, complete, outcome)
            if outcome.fatal:
                return RunStatus.FAILED, outcome.fatal
        problems = list(outcome.errors)
        if roster.error:
            problems.insert(0, roster.error)
        invalid_count = len(the_plan.invalid)
        if invalid_count:
            problems.insert(0, f"{invalid_count} event type(s) invalid; see the links' errors")
        if not complete:
            problems.insert(
                0,
                (listing.error or "source listing incomplete")
                + f"; {the_plan.deletes_withheld} delete(s) withheld until a complete listing",
            )
        if problems:
            return RunStatus.PARTIAL, "; ".join(problems)[:2000]
        connection.source_etag = listing.etag if outcome.transient == 0 else None
        return RunStatus.SUCCEEDED, None

    def _read(
        self,
        listing: Iterable[dict[str, Any]],
        outcome: Outcome,
        scope: team.Scope | None = None,
        roster: Team | None = None,
    ) -> tuple[list[DesiredLink], list[InvalidLink]]:
        """The links this connection wants: every active event type without a team (`scope`
        None, today's single-user behaviour), else the ones in this connection's scope."""
        desired: list[DesiredLink] = []
        invalid: list[InvalidLink] = []
        seen: set[str] = set()
        for item in listing:
            source_id = source_id_of(item)
            if source_id is None:
                outcome.failed += 1
                outcome.errors.append("an event type without a usable id was skipped")
                continue
            if source_id in seen:
                outcome.failed += 1
                outcome.errors.append(f"event type {source_id!r} is listed twice; first kept")
                continue
            seen.add(source_id)
            if not is_active(item):
                continue
            if scope is None:
                mine = [item]
            else:
                if roster is not None and team.is_managed(item):
                    roster.managed.append(item)
                mine = team.expand(item, scope)
            for each in mine:
                if source_id_of(each) is None:
                    outcome.failed += 1
                    outcome.errors.append(f"event type {source_id!r}: its link id is too long")
                    continue
                mapped = map_event_type(each)
                (desired if isinstance(mapped, DesiredLink) else invalid).append(mapped)  # type: ignore[arg-type]
        return desired, invalid

    # Teams ------------------------------------------------------------------------------

    def _roster(self, session: Session, connection: Connection) -> Team:
        """The account's members from the source, saved to our table; the saved roster (as
        incomplete) when the source cannot say; empty when the source has no team (404)."""
        saved = {
            m.member_id: m
            for m in session.scalars(
                select(TeamMember).where(TeamMember.account_id == connection.account_id)
            )
        }
        try:
            listing = self.source.members(connection.account_id)
            read = [] if listing is None else list(listing)
        except SourceUnavailable as exc:
            return Team(
                members={mid: m.email for mid, m in saved.items()},
                complete=False,
                error=f"team members could not be read: {exc}",
            )
        roster = Team(complete=listing is None or listing.complete)
        # Only the admin connection records the roster (one writer: its runs never overlap);
        # members' runs of the same account run at the same time and only read it.
        writes_roster = connection.member_id is None
        if listing is not None and not listing.complete:
            roster.error = listing.error or "team members listing incomplete"
        for item in read:
            member = team.member_id_of(item.get("id")) if isinstance(item, dict) else None
            if member is None or member in roster.members or len(member) > 255:
                continue
            email = item.get("email") if isinstance(item.get("email"), str) else None
            name = item.get("name") if isinstance(item.get("name"), str) else None
            roster.members[member] = email
            if not writes_roster:
                continue
            row = saved.get(member)
            if row is None:
                row = TeamMember(account_id=connection.account_id, member_id=member)
                session.add(row)
                saved[member] = row
            if (row.email, row.name) != (email and email[:320], name and name[:255]):
                row.email, row.name = email and email[:320], name and name[:255]
        if roster.complete and writes_roster:
            for member, row in saved.items():
                if member not in roster.members:
                    session.delete(row)
        elif not roster.members:
            roster.members = {mid: m.email for mid, m in saved.items()}
        session.flush()
        return roster

    @staticmethod
    def _record_matches(
        session: Session,
        connection: Connection,
        org_users: dict[str, str],
        names: dict[str, str | None],
    ) -> dict[str, str]:
        """Each member's Close user, matched by email (what coverage reports). Returns the
        members who became matched or unmatched (for coverage.changed)."""
        changes: dict[str, str] = {}
        for member in session.scalars(
            select(TeamMember).where(TeamMember.account_id == connection.account_id)
        ):
            email = team.normalize_email(member.email)
            user_id = org_users.get(email) if email else None
            name = names.get(user_id) if user_id else None
            if member.close_user_id != user_id:
                changes[member.member_id] = (
                    coverage.Change.UNMATCHED if user_id is None else coverage.Change.MATCHED
                )
            if (member.close_user_id, member.close_user_name) != (user_id, name):
                member.close_user_id, member.close_user_name = user_id, name and name[:255]
        return changes

    def _has_shared(self, session: Session, connection: Connection) -> bool:
        return (
            session.scalar(
                select(SharedLink.id).where(SharedLink.account_id == connection.account_id).limit(1)
            )
            is not None
        )

    def _sync_shared(
        self,
        session: Session,
        connection: Connection,
        close: CloseClient,
        roster: Team,
        complete: bool,
        outcome: Outcome,
    ) -> None:
        """The admin run's last step: match the members against the org's users, then our
        shared links for the managed types and the mappings of each matched member (skipped,
        and said so, without the permission). The matches are recorded last, with their
        coverage.changed in the same commit, so the event's totals include the mappings."""
        try:
            org = close.organization(connection.close_org_id or "")
        except FATAL as exc:
            outcome.fatal = str(exc)
            return
        except (CloseError, TokenRefreshUnavailable) as exc:
            outcome.errors.append(f"shared links skipped this run: {exc}")
            outcome.transient += 1
            return
        org_users: dict[str, str] = {}
        names: dict[str, str | None] = {}
        for membership in org.get("memberships") or []:
            email = team.normalize_email(membership.get("user_email"))
            if email and membership.get("user_id"):
                org_users.setdefault(email, str(membership["user_id"]))
                names[str(membership["user_id"])] = membership.get("user_full_name")
        self._sync_shared_links(session, connection, close, roster, complete, outcome, org_users)
        matches = self._record_matches(session, connection, org_users, names)
        coverage.record_changed(
            session, connection.account_id, matches, connection_id=connection.id
        )
        session.commit()

    def _sync_shared_links(
        self,
        session: Session,
        connection: Connection,
        close: CloseClient,
        roster: Team,
        complete: bool,
        outcome: Outcome,
        org_users: dict[str, str],
    ) -> None:
        try:
            me = close.me()
            granted = next(
                (
                    m.get("permissions_granted") or []
                    for m in me.get("memberships") or []
                    if m.get("organization_id") == connection.close_org_id
                ),
                [],
            )
            connection.manage_customizations = MANAGE_CUSTOMIZATIONS in granted
            session.commit()
            if not connection.manage_customizations:
                return
        except FATAL as exc:
            outcome.fatal = str(exc)
            return
        except (CloseError, TokenRefreshUnavailable) as exc:
            outcome.errors.append(f"shared links skipped this run: {exc}")
            outcome.transient += 1
            return
        user_links: dict[str, str] = dict(
            session.execute(  # type: ignore[arg-type]  # close_link_id IS NOT NULL
                select(SyncedLink.source_id, SyncedLink.close_link_id)
                .join(Connection, Connection.id == SyncedLink.connection_id)
                .where(
                    Connection.account_id == connection.account_id,
                    Connection.status == ConnectionStatus.ACTIVE,
                    SyncedLink.state == LinkState.SYNCED,
                    SyncedLink.close_link_id.is_not(None),
                )
            ).all()
        )
        shared, mappings = team.desired_shared(
            roster.managed, roster.members, org_users, user_links
        )
        rows = {
            row.event_type_id: row
            for row in session.scalars(
                select(SharedLink).where(SharedLink.account_id == connection.account_id)
            )
        }
        maps = {
            (row.event_type_id, m.close_user_id): m for row in rows.values() for m in row.mappings
        }
        the_plan = team.plan_shared(
            shared,
            mappings,
            {et: (row.content_hash if row.close_shared_id else None) for et, row in rows.items()},
            {key: m.content_hash for key, m in maps.items()},
            complete=complete,
        )
        org_id = connection.close_org_id

        def save_link(item: team.DesiredShared, answer: Any) -> None:
            row = rows[item.event_type_id]
            if row.close_shared_id:
                outcome.updated += 1
            else:
                row.close_shared_id = str(answer["id"])
                outcome.created += 1
            row.content_hash, row.name, row.last_error = (
                item.content_hash,
                item.fields["name"],
                None,
            )
            session.commit()

        def link_refused(item: team.DesiredShared, exc: CloseValidationError) -> None:
            rows[item.event_type_id].last_error = f"Close rejected the shared link: {exc}"
            outcome.failed += 1

        def link_call(item: team.DesiredShared) -> Callable[[], Any]:
            row = rows.get(item.event_type_id)
            if row is None:
                row = SharedLink(account_id=connection.account_id, event_type_id=item.event_type_id)
                session.add(row)
                rows[item.event_type_id] = row
            if row.close_shared_id:
                return partial(close.update_shared_link, row.close_shared_id, item.fields)
            for stale in list(row.mappings):  # a new shared link has no mappings
                row.mappings.remove(stale)
            return _bind(close.create_shared_link, item.fields)

        def save_mapping(mapping: team.DesiredMapping, _answer: Any) -> None:
            row = rows[mapping.event_type_id]
            record = maps.get((mapping.event_type_id, mapping.close_user_id))
            if record is None or record not in row.mappings:
                record = SharedLinkMapping(close_user_id=mapping.close_user_id)
                row.mappings.append(record)
                maps[(mapping.event_type_id, mapping.close_user_id)] = record
            record.member_id, record.target_kind = mapping.member_id, mapping.target_kind
            record.target_value, record.content_hash = mapping.target_value, mapping.content_hash
            outcome.updated += 1
            session.commit()

        def mapping_refused(mapping: team.DesiredMapping, exc: CloseValidationError) -> None:
            outcome.failed += 1
            outcome.errors.append(f"mapping {mapping.member_id} refused: {exc}")

        def mapping_body(et_id: str, user_id: str) -> dict[str, Any]:
            return {
                "organization_id": org_id,
                "shared_scheduling_link_id": rows[et_id].close_shared_id,
                "user_id": user_id,
            }

        def save_unmap(key: tuple[str, str], _answer: Any) -> None:
            session.delete(maps.pop(key))
            outcome.deleted += 1
            session.commit()

        def save_delete(et_id: str, _answer: Any) -> None:
            if rows[et_id].close_shared_id:
                outcome.deleted += 1
            session.delete(rows.pop(et_id))
            session.commit()

        try:
            # Each step's Close calls run in parallel (within the org's budget, like user
            # links); each answer is recorded as it arrives, so a failure loses nothing
            # Close already confirmed.
            links = the_plan.create + the_plan.update
            self._in_parallel([(item, link_call(item)) for item in links], save_link, link_refused)
            ready = [
                m
                for m in the_plan.map
                if rows[m.event_type_id].close_shared_id
                and rows[m.event_type_id].content_hash is not None
            ]
            map_as = self._mapping_callers(session, connection, close)
            self._in_parallel(
                [
                    (
                        m,
                        _bind(
                            map_as(m),
                            {
                                **mapping_body(m.event_type_id, m.close_user_id),
                                m.target_kind: m.target_value,
                            },
                        ),
                    )
                    for m in ready
                ],
                save_mapping,
                mapping_refused,
            )
            self._in_parallel(
                [
                    ((et_id, user_id), _bind(close.unmap_shared_link, mapping_body(et_id, user_id)))
                    for et_id, user_id in the_plan.unmap
                ],
                save_unmap,
            )
            gone = [et_id for et_id in the_plan.delete if not rows[et_id].close_shared_id]
            for et_id in gone:
                save_delete(et_id, None)
            deletes = [et_id for et_id in the_plan.delete if et_id not in gone]
            self._in_parallel(
                [
                    (et_id, _bind(close.delete_shared_link, rows[et_id].close_shared_id))
                    for et_id in deletes
                ],
                save_delete,
            )
        except FATAL as exc:
            outcome.fatal = str(exc)
        except (CloseError, TokenRefreshUnavailable) as exc:
            session.commit()
            outcome.errors.append(f"shared links: {exc} (will retry next run)")
            outcome.transient += 1
        if the_plan.withheld:
            outcome.errors.append(
                f"{the_plan.withheld} shared-link removal(s) withheld until a complete listing"
            )

    def _mapping_callers(
        self, session: Session, admin: Connection, close: CloseClient
    ) -> Callable[[team.DesiredMapping], Callable[[dict[str, Any]], Any]]:
        """Who makes each mapping call. Close lets the owner of a user link map a shared link
        to it for themselves, so a mapping to a member's own link is made with that member's
        connection: the admin's token has its own per-token limit (a third of the org's), and
        a team's mappings would otherwise all queue on it. Everything else, and any mapping
        the member's token cannot make (grant gone, refused), goes through the admin."""
        members = {
            c.member_id: c
            for c in session.scalars(
                select(Connection).where(
                    Connection.account_id == admin.account_id,
                    Connection.member_id.is_not(None),
                    Connection.status == ConnectionStatus.ACTIVE,
                    Connection.close_org_id == admin.close_org_id,
                )
            )
        }
        clients: dict[str, CloseClient] = {}

        def caller(mapping: team.DesiredMapping) -> Callable[[dict[str, Any]], Any]:
            owner = members.get(mapping.member_id)
            if (
                owner is None
                or owner.close_user_id != mapping.close_user_id
                or mapping.target_kind != team.USER_LINK_TARGET
            ):
                return close.map_shared_link
            if mapping.member_id not in clients:
                clients[mapping.member_id] = self.close_for(owner)
            own = clients[mapping.member_id]

            def as_owner(body: dict[str, Any]) -> Any:
                try:
                    return own.map_shared_link(body)
                except (*FATAL, CloseAuthError, CloseForbidden, TokenRefreshUnavailable):
                    return close.map_shared_link(body)

            return as_owner

        return caller

    def _in_parallel(
        self,
        calls: list[tuple[K, Callable[[], Any]]],
        save: Callable[[K, Any], None],
        refused: Callable[[K, CloseValidationError], None] | None = None,
    ) -> None:
        """Make the calls on up to `concurrency` threads; `save` (or `refused`, for a 400)
        runs in this thread as each answer arrives. The first other failure stops further
        calls; the ones in flight are still recorded, then it is raised."""
        failures: list[BaseException] = []
        for key, future in as_finished(calls, self.config.concurrency, go_on=lambda: not failures):
            try:
                answer = future.result()
            except CloseValidationError as exc:
                if refused is None:
                    failures.append(exc)
                else:
                    refused(key, exc)
            except BaseException as exc:
                failures.append(exc)
            else:
                save(key, answer)
        if failures:
            raise failures[0]

    def _record_invalid(
        self,
        session: Session,
        connection: Connection,
        rows: dict[str, SyncedLink],
        invalid: list[InvalidLink],
        outcome: Outcome,
    ) -> None:
        for item in invalid:
            row = rows.get(item.source_id)
            if row is None:
                row = SyncedLink(connection_id=connection.id, source_id=item.source_id)
                session.add(row)
                rows[item.source_id] = row
            row.state = LinkState.ERROR
            row.name = item.name
            row.last_error = f"invalid event type: {item.error}"
            outcome.failed += 1

    def _forget_unwanted(
        self,
        session: Session,
        connection: Connection,
        rows: dict[str, SyncedLink],
        desired: list[DesiredLink],
        invalid: list[InvalidLink],
        complete: bool,
    ) -> None:
        """Rows that Close never held and the source no longer wants need no Close call."""
        if not complete:
            return
        wanted = {d.source_id for d in desired} | {i.source_id for i in invalid}
        stale = [sid for sid, row in rows.items() if sid not in wanted and not row.may_be_in_close]
        if stale:
            session.execute(
                delete(SyncedLink).where(
                    SyncedLink.connection_id == connection.id, SyncedLink.source_id.in_(stale)
                )
            )
            for sid in stale:
                rows.pop(sid)

    def _apply(
        self,
        session: Session,
        connection: Connection,
        run: SyncRun,
        close: CloseClient,
        rows: dict[str, SyncedLink],
        the_plan: Plan,
        outcome: Outcome,
    ) -> None:
        operations: list[tuple[tuple[str, str], Callable[[], Any]]] = [
            (("upsert", link.source_id), _bind(close.upsert_integration_link, link.fields))
            for link in the_plan.upserts
        ] + [
            (("delete", sid), _bind(close.delete_integration_link, sid)) for sid in the_plan.deletes
        ]
        if not operations:
            return
        desired = {link.source_id: link for link in the_plan.upserts}
        for sid in the_plan.deletes:
            rows[sid].state = LinkState.DELETING
        last_checkpoint = time.monotonic()
        since_checkpoint = 0
        for (kind, sid), future in as_finished(
            operations, self.config.concurrency, go_on=lambda: outcome.fatal is None
        ):
            self._settle(session, connection, rows, desired, kind, sid, future, outcome)
            run.progress_done += 1
            since_checkpoint += 1
            if since_checkpoint >= CHECKPOINT_EVERY or (
                time.monotonic() - last_checkpoint >= CHECKPOINT_SECONDS
            ):
                self._checkpoint(session, run, outcome)
                since_checkpoint, last_checkpoint = 0, time.monotonic()
        self._checkpoint(session, run, outcome)

    def _settle(
        self,
        session: Session,
        connection: Connection,
        rows: dict[str, SyncedLink],
        desired: dict[str, DesiredLink],
        kind: str,
        sid: str,
        future: Future[Any],
        outcome: Outcome,
    ) -> None:
        try:
            result = future.result()
        except FATAL as exc:
            outcome.fatal = outcome.fatal or str(exc)
            return
        except CloseError as exc:
            if not refuses_access(exc):
                self._settle_failure(session, connection, rows, desired, kind, sid, exc, outcome)
                return
            # The same answer awaits every other link: stop instead of one call (and one
            # token rotation) per link.
            metrics.LINK_OPERATIONS.labels(kind, "refused").inc()
            reason = f"{ACCESS_REFUSED_PREFIX} ({exc.status}): {exc}"[:1000]
            outcome.fatal = outcome.fatal or reason
            outcome.access_refused = outcome.access_refused or reason
            return
        except TokenRefreshUnavailable as exc:
            self._settle_failure(session, connection, rows, desired, kind, sid, exc, outcome)
            return
        self._settle_success(session, connection, rows, desired, kind, sid, result, outcome)

    def _settle_failure(
        self,
        session: Session,
        connection: Connection,
        rows: dict[str, SyncedLink],
        desired: dict[str, DesiredLink],
        kind: str,
        sid: str,
        exc: Exception,
        outcome: Outcome,
    ) -> None:
        row = rows.get(sid) or self._new_row(session, connection, rows, sid)
        outcome.failed += 1
        if isinstance(exc, CloseValidationError):
            # Close refused this payload: retrying cannot help until the event type changes.
            metrics.LINK_OPERATIONS.labels(kind, "rejected").inc()
            row.state = LinkState.ERROR
            row.last_error = f"Close rejected the link: {rejection_text(exc)}"[:4000]
            if kind == "upsert":
                row.name = desired[sid].fields["name"]
            return
        metrics.LINK_OPERATIONS.labels(kind, "failed").inc()
        outcome.transient += 1
        if len(outcome.errors) < 5:
            outcome.errors.append(f"{sid}: {exc} (will retry next run)")
        if kind == "upsert":
            row.state = LinkState.PENDING
            row.name = desired[sid].fields["name"]
            row.url = desired[sid].fields["url"]
        row.last_error = f"temporary: {exc}"

    def _settle_success(
        self,
        session: Session,
        connection: Connection,
        rows: dict[str, SyncedLink],
        desired: dict[str, DesiredLink],
        kind: str,
        sid: str,
        result: Any,
        outcome: Outcome,
    ) -> None:
        row = rows.get(sid)
        metrics.LINK_OPERATIONS.labels(kind, "ok").inc()
        if kind == "delete":
            outcome.deleted += 1
            if row is not None:
                session.delete(row)
                rows.pop(sid, None)
            return
        link = desired[sid]
        if row is None or (row.content_hash is None and row.close_link_id is None):
            outcome.created += 1
        else:
            outcome.updated += 1
        if row is None:
            row = self._new_row(session, connection, rows, sid)
        row.state = LinkState.SYNCED
        row.content_hash = link.content_hash
        row.close_link_id = (result or {}).get("id") or row.close_link_id
        row.name = link.fields["name"]
        row.url = link.fields["url"]
        row.last_error = None
        row.last_synced_at = utcnow()

    @staticmethod
    def _new_row(
        session: Session, connection: Connection, rows: dict[str, SyncedLink], sid: str
    ) -> SyncedLink:
        row = SyncedLink(connection_id=connection.id, source_id=sid)
        session.add(row)
        rows[sid] = row
        return row

    def _phase(self, phase: str, total: int = 0) -> None:
        if self.on_phase:
            self.on_phase(phase, total)

    def _checkpoint(self, session: Session, run: SyncRun, outcome: Outcome) -> None:
        run.created, run.updated, run.deleted = outcome.created, outcome.updated, outcome.deleted
        run.failed = outcome.failed
        session.commit()
        if self.on_progress:
            self.on_progress(run.progress_done, run.progress_total)

    # Reconcile --------------------------------------------------------------------------

    def _reconcile(
        self,
        session: Session,
        connection: Connection,
        close: CloseClient,
        rows: dict[str, SyncedLink],
    ) -> None:
        """Make our table match what Close really holds, so the plan repairs drift:
        a link of ours deleted by hand is re-created; an orphan of ours gets deleted.
        Links we do not own (MANUAL, CALENDLY, other apps) are never considered."""
        client_id = self.config.close_client_id
        # Another live connection of the same Close user (legacy data: connect refuses a
        # second account) syncs links with this app's client id too: those are not ours.
        others = set(
            session.scalars(
                select(SyncedLink.source_id)
                .join(Connection, Connection.id == SyncedLink.connection_id)
                .where(
                    Connection.id != connection.id,
                    Connection.close_user_id == connection.close_user_id,
                    Connection.status != ConnectionStatus.DISCONNECTED,
                )
            )
        )
        ours: dict[str, dict[str, Any]] = {}
        for link in close.iter_links():
            sid = link.get("source_id")
            if (
                link.get("source") == "THIRD_PARTY"
                and link.get("oauth_client_id") == client_id
                and link.get("user_id") == connection.close_user_id
                and link.get("organization_id") == connection.close_org_id
                and isinstance(sid, str)
                and sid
                and "/" not in sid  # not ours to hold, and Close could not delete it anyway
                and (sid in rows or sid not in others)
            ):
                ours[sid] = link
        for sid, row in rows.items():
            if sid not in ours and row.content_hash is not None:
                row.content_hash = None  # gone from Close: upsert it again
                row.close_link_id = None
                row.state = LinkState.PENDING
        for sid, link in ours.items():
            if sid not in rows:
                # An orphan: ours in Close, unknown here. The plan deletes it unless wanted.
                rows[sid] = self._new_row(session, connection, rows, sid)
                rows[sid].state = LinkState.DELETING
                rows[sid].close_link_id = link.get("id")
        connection.next_reconcile_at = None
        session.flush()

    # Finish -----------------------------------------------------------------------------

    def _finish(
        self,
        session: Session,
        connection: Connection,
        run: SyncRun,
        outcome: Outcome,
        status: RunStatus,
        error: str | None,
        reconcile: bool,
    ) -> None:
        now = utcnow()
        run.status = status
        run.error = error
        run.finished_at = now
        run.retry_owed = outcome.transient > 0 or (error or "").startswith("internal error")
        run.created, run.updated, run.deleted = outcome.created, outcome.updated, outcome.deleted
        run.unchanged, run.failed = outcome.unchanged, outcome.failed
        connection.last_sync_at = now
        connection.last_sync_status = status
        if outcome.access_refused:
            connection.status_reason = outcome.access_refused
        elif (
            status == RunStatus.SUCCEEDED
            and connection.status == ConnectionStatus.ACTIVE
            and (connection.status_reason or "").startswith(ACCESS_REFUSED_PREFIX)
        ):
            connection.status_reason = None  # Close accepts our calls again
        connection.last_sync_run_id = run.id
        if reconcile and status in (RunStatus.SUCCEEDED, RunStatus.PARTIAL):
            connection.next_reconcile_at = now + timedelta(seconds=self.config.reconcile_interval)
        outbox.record_run(
            session, connection, run, sync_completed=self.config.events_sync_completed
        )
        session.commit()


def rejection_text(exc: CloseValidationError) -> str:
    """Everything Close said about a 400: its `error` (text or list) and its `field-errors`."""
    detail = exc.detail if isinstance(exc.detail, dict) else {}
    parts: list[str] = []
    error = detail.get("error")
    if isinstance(error, str) and error:
        parts.append(error)
    elif isinstance(error, dict) and isinstance(error.get("message"), str):
        parts.append(error["message"])
    errors = detail.get("errors")
    if isinstance(errors, list):
        parts.extend(str(e) for e in errors if e not in (None, ""))
    field_errors = detail.get("field-errors")
    if isinstance(field_errors, dict):
        parts.extend(f"{name}: {msg}" for name, msg in sorted(field_errors.items()))
    return "; ".join(parts) or str(exc)


def as_finished(
    calls: Iterable[tuple[K, Callable[[], Any]]],
    concurrency: int,
    *,
    go_on: Callable[[], bool],
) -> Iterator[tuple[K, Future[Any]]]:
    """Make the calls on up to `concurrency` threads (each with the caller's log context:
    request, task, connection ids) and yield each (key, finished future) in the caller's
    thread as it finishes; after each, the next call is started while `go_on()` holds."""
    queue = iter(calls)
    pending: dict[Future[Any], K] = {}
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="close") as pool:

        def submit_next() -> None:
            for key, call in queue:
                pending[pool.submit(contextvars.copy_context().run, call)] = key
                return

        for _ in range(max(1, concurrency)):
            submit_next()
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                key = pending.pop(future)
                yield key, future
                if go_on():
                    submit_next()


def _bind(fn: Callable[[Any], Any], arg: Any) -> Callable[[], Any]:
    return lambda: fn(arg)


def engine_for(
    svc: Services,
    *,
    on_progress: Callable[[int, int], None] | None = None,
    on_phase: Callable[[str, int], None] | None = None,
) -> SyncEngine:
    """The engine wired from one process's Services."""
    s = svc.settings
    return SyncEngine(
        sessions=svc.db.sessionmaker,
        close_for=svc.close_for,
        source=svc.source,
        config=EngineConfig(
            close_client_id=s.close_client_id,
            concurrency=s.CLOSE_CONCURRENCY,
            reconcile_interval=float(s.RECONCILE_INTERVAL_SECONDS),
            events_sync_completed=s.INTEGRATOR_EVENTS_SYNC_COMPLETED,
        ),
        on_progress=on_progress,
        on_phase=on_phase,
    )
