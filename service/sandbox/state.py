"""The Close sandbox's in-memory world: users, orgs, OAuth grants and tokens, scheduling links,
rate buckets, faults, and a call counter for tests.

Faithful to close-api.md: rotating refresh tokens (a used one dies at once), expiring access
tokens, revocation of a whole grant, THIRD_PARTY links keyed by (user, org, OAuth app,
source_id), per-group rate limits per token and (3x) per organization. One `threading.Lock`
guards everything (the link store and rate buckets included); public methods take it,
`_private` ones expect it held, and nothing sleeps under it. The HTTP layer only translates:
who may do what is decided here, who people are (users, orgs, memberships and their
permissions) is `directory.py`, what links are is `links.py`.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import random
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.sandbox import persistence
from service.sandbox.directory import (
    MANAGE_CUSTOMIZATIONS,
    Directory,
    Membership,
    Org,
    User,
)
from service.sandbox.errors import OAuthError, SandboxError, not_found, validation_error
from service.sandbox.faults import ERROR_STATUSES, FaultAction, Faults, parse_faults
from service.sandbox.links import LinkStore, parse_mapping, parse_unmapping
from service.sandbox.ratelimit import HEADER_MODES, HeaderMode, RateDecision, RateLimiter

SANDBOX_CLIENTS = {"linksync-sandbox": "sandbox-secret"}
SCOPE = "all.full_access offline_access"
NEEDS_CUSTOMIZATIONS = "You need the Manage Customizations permission."


@dataclass
class SandboxConfig:
    access_token_ttl: float = 3600.0
    clients: dict[str, str] = field(default_factory=lambda: dict(SANDBOX_CLIENTS))
    rate_limit_per_token: float = 20.0  # requests/s per endpoint group per token
    rate_limit_per_org: float | None = None  # None: three times the per-token limit
    rate_limits_enabled: bool = True
    rate_limit_headers: HeaderMode = "full"  # what a limited answer says (ratelimit.HEADER_MODES)
    latency_ms: float = 0.0  # added to every API and OAuth token/revoke call
    code_ttl: float = 600.0  # authorization codes

    @property
    def org_limit(self) -> float:
        if self.rate_limit_per_org is not None:
            return self.rate_limit_per_org
        return self.rate_limit_per_token * 3


def apply_config(config: SandboxConfig, values: Mapping[str, Any]) -> SandboxConfig:
    """A validated copy of `config` with `values` applied; ValueError names what is wrong."""
    changes: dict[str, Any] = {}
    for key, value in values.items():
        if key in ("access_token_ttl", "rate_limit_per_token", "code_ttl"):
            changes[key] = _positive(key, value)
        elif key == "rate_limit_per_org":
            changes[key] = None if value is None else _positive(key, value)
        elif key == "latency_ms":
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError("latency_ms must be a number >= 0")
            changes[key] = float(value)
        elif key == "rate_limits_enabled":
            if not isinstance(value, bool):
                raise ValueError("rate_limits_enabled must be true or false")
            changes[key] = value
        elif key == "rate_limit_headers":
            if value not in HEADER_MODES:
                raise ValueError(f"rate_limit_headers must be one of {', '.join(HEADER_MODES)}")
            changes[key] = value
        elif key == "clients":
            if not isinstance(value, dict) or not all(
                isinstance(k, str) and isinstance(v, str) and k and v for k, v in value.items()
            ):
                raise ValueError("clients must map client_id to client_secret (strings)")
            changes[key] = dict(value)
        else:
            raise ValueError(f"unknown setting {key!r}")
    return dataclasses.replace(config, **changes)


def _positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"{name} must be a number > 0")
    return float(value)


@dataclass
class Grant:
    """One authorization of an OAuth app by a user in one org; its tokens live and die with it."""

    id: str
    client_id: str
    user_id: str
    org_id: str
    refresh_token: str
    revoked: bool = False


@dataclass
class AuthCode:
    client_id: str
    redirect_uri: str
    user_id: str
    org_id: str
    expires: float


def _page(items: list[dict[str, Any]], skip: int, limit: int) -> tuple[list[dict[str, Any]], bool]:
    return items[skip : skip + limit], skip + limit < len(items)


class SandboxState:
    def __init__(
        self,
        config: SandboxConfig | None = None,
        seed: int = 0,
        clock: Callable[[], float] = time.monotonic,
        state_path: str | os.PathLike[str] | None = None,
    ) -> None:
        """`state_path`: a JSON file the world is loaded from now (if it exists) and saved to
        by `save()` (the app calls it after every mutating request); None keeps it in memory."""
        self._initial = copy.deepcopy(config or SandboxConfig())
        self._seed = seed
        self.clock = clock
        self.lock = threading.Lock()
        self.rng = random.Random(seed)  # noqa: S311 - fault injection, not security
        self.calls: Counter[str] = Counter()
        self._limiter = RateLimiter()
        self.state_path = Path(state_path) if state_path is not None else None
        self._save_lock = threading.Lock()  # saves in order: the last one written is the newest
        self.reset()
        if self.state_path is not None:
            self.load()

    # Seed data, reset, directory ---------------------------------------------------------

    def reset(self) -> None:
        """Everything back to the seeded world: config, faults, tokens, links, counters."""
        with self.lock:
            self.config = copy.deepcopy(self._initial)
            self.faults = Faults()
            self.rng.seed(self._seed)
            self.calls.clear()
            self._limiter.clear()
            self._directory = Directory.seeded()
            self.codes: dict[str, AuthCode] = {}
            self.grants: dict[str, Grant] = {}
            self.refresh_index: dict[str, str] = {}  # refresh token -> grant id
            self.access_tokens: dict[str, tuple[str, float]] = {}  # token -> (grant id, expiry)
            self._links = LinkStore()

    def reset_calls(self) -> None:
        with self.lock:
            self.calls.clear()

    # Organizations and users -------------------------------------------------------------

    def add_org(self, org_id: str, name: str) -> None:
        with self.lock:
            self._directory.add_org(org_id, name)

    def add_user(
        self,
        user_id: str,
        first_name: str,
        last_name: str,
        email: str,
        org_ids: Iterable[str],
        can_manage_customizations: bool = False,
        *,
        permissions: Iterable[str] | None = None,
    ) -> None:
        """Add or replace a user, a member of `org_ids` (unknown ones are created, named by
        their id) with the same permissions in each: `permissions` if given, otherwise Manage
        Customizations or nothing. ValueError for an email another user has."""
        if permissions is None:
            permissions = [MANAGE_CUSTOMIZATIONS] if can_manage_customizations else []
        with self.lock:
            self._directory.add_user(user_id, first_name, last_name, email, org_ids, permissions)

    def remove_user(self, user_id: str, org_id: str | None = None) -> int:
        """The user leaves `org_id` (None: Close altogether): their grants there die with all
        their tokens and their shared-link mappings there go; their links stay, as Close keeps
        a former member's data. Returns how many grants died; UnknownError if not a member."""
        with self.lock:
            left = self._directory.remove_member(user_id, org_id)
            victims = self._live_grants(user_id, org_ids=left)
            for grant in victims:
                self._revoke(grant)
            for org in left:
                self._links.unmap_user(org, user_id)
            return len(victims)

    def set_permissions(self, user_id: str, org_id: str, permissions: Iterable[str]) -> Membership:
        """Replace what a user may do in one org, e.g. `[]` or `["manage_customizations"]`;
        live tokens follow at once. UnknownError if not a member, ValueError for bad names."""
        with self.lock:
            return self._directory.set_permissions(user_id, org_id, permissions)

    def directory(self) -> tuple[list[User], list[Org]]:
        """Copies of every user and org (the consent page lists them all)."""
        with self.lock:
            return (
                copy.deepcopy(list(self._directory.users.values())),
                copy.deepcopy(list(self._directory.orgs.values())),
            )

    def me(self, grant: Grant) -> dict[str, Any]:
        with self.lock:
            return self._directory.me(grant.user_id)

    def org_users(self, grant: Grant, skip: int, limit: int) -> tuple[list[dict[str, Any]], bool]:
        with self.lock:
            users = self._directory.user_listing(grant.org_id)
        return _page(users, skip, limit)

    def organization(self, grant: Grant, org_id: str) -> dict[str, Any]:
        """The token's org with its memberships; any other org is a 404, even one the user is
        also a member of (a token is for one org)."""
        with self.lock:
            if org_id != grant.org_id:
                raise not_found()
            return self._directory.organization(org_id)

    def team(self, org_id: str) -> dict[str, Any]:
        """One org as a test wants to see it: each member (user, membership, live grants,
        links) and each shared link with its mappings. UnknownError for an unknown org."""
        with self.lock:
            org = self._directory.org(org_id)
            mappings = self._links.mappings(org_id)
            return {
                "organization": org.public(),
                "members": [
                    {
                        **user.public(),
                        "membership": self._directory.member_view(user, org_id),
                        "active_grants": len(self._live_grants(user.id, org_ids=[org_id])),
                        "links": self._links.user_links(user.id, org_id),
                    }
                    for user in self._directory.members(org_id)
                ],
                "shared_links": [
                    {
                        **shared,
                        "associations": [
                            m for m in mappings if m["shared_scheduling_link_id"] == shared["id"]
                        ],
                    }
                    for shared in self._links.shared_links(org_id)
                ],
            }

    # Configuration and faults ------------------------------------------------------------

    def update_config(self, **values: Any) -> None:
        """Change settings at runtime (validated); rate buckets adopt new limits at once."""
        with self.lock:
            self.config = apply_config(self.config, values)

    def set_faults(self, **values: Any) -> None:
        """Replace the fault switches (no arguments: none). See `faults.Faults`."""
        faults = parse_faults(values)
        with self.lock:
            self.faults = faults

    def latency_for(self, group: str) -> float:
        """Seconds to hold a call of `group` back before answering it."""
        with self.lock:
            extra = self.faults.latency_ms if self.faults.applies_to(group) else 0.0
            return (self.config.latency_ms + extra) / 1000

    def draw_fault(self, group: str) -> FaultAction | None:
        """Whether this call of `group` fails, decided with the seeded random generator."""
        with self.lock:
            faults = self.faults
            if not faults.applies_to(group):
                return None
            action: FaultAction | None = None
            if faults.fail_next > 0:
                self.faults = dataclasses.replace(faults, fail_next=faults.fail_next - 1)
                action = FaultAction("fail_next", status=faults.fail_status)
            elif faults.error_rate or faults.timeout_rate:
                roll = self.rng.random()
                if roll < faults.error_rate:
                    status = faults.error_status or self.rng.choice(ERROR_STATUSES)
                    action = FaultAction("error", status=status)
                elif roll < faults.error_rate + faults.timeout_rate:
                    action = FaultAction(
                        "timeout",
                        status=504,
                        delay=faults.timeout_seconds,
                        applies_write=faults.timeout_applies_write,
                    )
            if action is not None:
                self.calls[f"fault:{action.kind}"] += 1
            return action

    # Traffic accounting ------------------------------------------------------------------

    def count(self, key: str) -> None:
        with self.lock:
            self.calls[key] += 1

    def take(self, group: str, token_key: str, org_id: str) -> RateDecision:
        """Spend one request of `group` for this token and org, or refuse it (a 429)."""
        with self.lock:
            decision = self._limiter.take(
                group,
                token_key,
                org_id,
                token_limit=self.config.rate_limit_per_token,
                org_limit=self.config.org_limit,
                enabled=self.config.rate_limits_enabled,
                now=self.clock(),
            )
            decision = dataclasses.replace(decision, headers_mode=self.config.rate_limit_headers)
            if not decision.allowed:
                self.calls["429"] += 1
                self.calls[f"429:{group}"] += 1
            return decision

    # OAuth -------------------------------------------------------------------------------

    def client_ok(self, client_id: str | None, secret: str | None) -> bool:
        with self.lock:
            expected = self.config.clients.get(client_id or "")
        return expected is not None and secrets.compare_digest(
            expected.encode(), (secret or "").encode()
        )

    def client_known(self, client_id: str) -> bool:
        with self.lock:
            return client_id in self.config.clients

    def create_code(self, client_id: str, redirect_uri: str, user_id: str, org_id: str) -> str:
        """The user approved on the consent page: a single-use code for this client and URI."""
        with self.lock:
            user = self._directory.users.get(user_id)
            if user is None:
                raise SandboxError(400, "Choose who you are signed in as.")
            if not self._directory.is_member(user_id, org_id):
                raise SandboxError(400, f"{user.full_name} is not a member of that organization.")
            code = "sbx_code_" + secrets.token_urlsafe(18)
            self.codes[code] = AuthCode(
                client_id, redirect_uri, user_id, org_id, self.clock() + self.config.code_ttl
            )
            return code

    def exchange_code(self, code: str, client_id: str, redirect_uri: str | None) -> dict[str, Any]:
        """Token response for an authorization code; OAuthError `invalid_grant` otherwise."""
        with self.lock:
            data = self.codes.pop(code, None)  # single use, even when the rest is wrong
            if data is None or data.expires <= self.clock():
                raise self._invalid_grant("The authorization code is unknown, used or expired.")
            if data.client_id != client_id:
                raise self._invalid_grant("The authorization code was issued to another client.")
            if redirect_uri != data.redirect_uri:
                raise self._invalid_grant("redirect_uri does not match the authorization request.")
            grant = self._new_grant(client_id, data.user_id, data.org_id)
            return self._issue(grant)

    def refresh(self, refresh_token: str, client_id: str) -> dict[str, Any]:
        """Rotation: a new pair; the refresh token just used stops working at once."""
        with self.lock:
            grant = self.grants.get(self.refresh_index.get(refresh_token, ""))
            if grant is None or grant.revoked or grant.client_id != client_id:
                raise self._invalid_grant("The refresh token is invalid, used or revoked.")
            if not self._directory.is_member(grant.user_id, grant.org_id):
                raise self._invalid_grant("The user is no longer a member of the organization.")
            return self._issue(grant)

    def revoke_token(self, token: str, client_id: str) -> bool:
        """RFC 7009: revoke the grant `token` (refresh or access) belongs to, if it is this
        client's. Returns whether a grant died; the HTTP answer is 200 either way."""
        with self.lock:
            grant = self._grant_of_token(token)
            if grant is None or grant.client_id != client_id or grant.revoked:
                return False
            self._revoke(grant)
            return True

    def oauth_subject(self, client_id: str, grant_type: str, token: str) -> tuple[str, str]:
        """Who a token-endpoint call counts against (bucket key, org) for the "oauth" group:
        the grant (or the code's user) and its org; an unknown token counts against the client."""
        with self.lock:
            if grant_type == "authorization_code":
                code = self.codes.get(token)
                if code is not None:
                    return f"code:{client_id}:{code.user_id}", code.org_id
            else:
                grant = self._grant_of_token(token)
                if grant is not None:
                    return f"grant:{grant.id}", grant.org_id
        return f"client:{client_id}", f"client:{client_id}"

    def issue_tokens(self, client_id: str, user_id: str, org_id: str) -> dict[str, Any]:
        """A fresh grant without the browser (tests and benchmarks); same shape as the token
        response. ValueError for an unknown client, user, org or membership."""
        with self.lock:
            if client_id not in self.config.clients:
                raise ValueError(f"unknown client_id {client_id!r}")
            if user_id not in self._directory.users:
                raise ValueError(f"unknown user {user_id!r}")
            if not self._directory.is_member(user_id, org_id):
                raise ValueError(f"{user_id} is not a member of {org_id!r}")
            return self._issue(self._new_grant(client_id, user_id, org_id))

    def revoke_grant(
        self, user_id: str, client_id: str | None = None, org_id: str | None = None
    ) -> int:
        """The user removes the app in Close: every grant of theirs (for `client_id`, or for
        any app; in `org_id`, or in any org) dies with all its tokens. Returns how many grants
        died; the user's other grants and every other member's live on."""
        with self.lock:
            victims = self._live_grants(
                user_id, client_id=client_id, org_ids=None if org_id is None else [org_id]
            )
            for grant in victims:
                self._revoke(grant)
            return len(victims)

    def expire_access_tokens(self) -> int:
        """Every access token is expired from now on (refresh tokens still work)."""
        with self.lock:
            for token, (grant_id, _) in self.access_tokens.items():
                self.access_tokens[token] = (grant_id, 0.0)
            return len(self.access_tokens)

    def authenticate(self, token: str) -> Grant:
        """The live grant of an access token; SandboxError 401 otherwise."""
        with self.lock:
            entry = self.access_tokens.get(token)
            if entry is None:
                raise SandboxError(401, "Invalid access token.")
            grant = self.grants.get(entry[0])
            if grant is None or grant.revoked:
                raise SandboxError(401, "The access token has been revoked.")
            if entry[1] <= self.clock():
                raise SandboxError(401, "The access token has expired.")
            if not self._directory.is_member(grant.user_id, grant.org_id):
                # Only if a test changed the directory (add_user) without revoking the grant.
                raise SandboxError(401, "The user of this token is not a member of its org.")
            return copy.copy(grant)

    def _live_grants(
        self, user_id: str, client_id: str | None = None, org_ids: Iterable[str] | None = None
    ) -> list[Grant]:
        orgs = None if org_ids is None else set(org_ids)
        return [
            g
            for g in self.grants.values()
            if g.user_id == user_id
            and not g.revoked
            and (client_id is None or g.client_id == client_id)
            and (orgs is None or g.org_id in orgs)
        ]

    def _invalid_grant(self, description: str) -> OAuthError:
        self.calls["oauth:invalid_grant"] += 1
        return OAuthError("invalid_grant", description)

    def _new_grant(self, client_id: str, user_id: str, org_id: str) -> Grant:
        grant = Grant("grant_" + secrets.token_hex(8), client_id, user_id, org_id, "")
        self.grants[grant.id] = grant
        return grant

    def _issue(self, grant: Grant) -> dict[str, Any]:
        access = "sbx_at_" + secrets.token_urlsafe(24)
        refresh = "sbx_rt_" + secrets.token_urlsafe(24)
        self.refresh_index.pop(grant.refresh_token, None)
        grant.refresh_token = refresh
        self.refresh_index[refresh] = grant.id
        ttl = self.config.access_token_ttl
        self.access_tokens[access] = (grant.id, self.clock() + ttl)
        return {
            "token_type": "Bearer",
            "access_token": access,
            "expires_in": int(ttl) if ttl >= 1 else ttl,
            "refresh_token": refresh,
            "scope": SCOPE,
            "organization_id": grant.org_id,
            "user_id": grant.user_id,
        }

    def _grant_of_token(self, token: str) -> Grant | None:
        grant_id = self.refresh_index.get(token) or self.access_tokens.get(token, ("", 0.0))[0]
        return self.grants.get(grant_id) if grant_id else None

    def _revoke(self, grant: Grant) -> None:
        # Its access tokens stay indexed so that they answer "revoked", not "invalid".
        grant.revoked = True
        self.refresh_index.pop(grant.refresh_token, None)

    # User scheduling links ---------------------------------------------------------------

    def upsert_integration(self, grant: Grant, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Create or update this app's link of the token's user and org with `source_id`
        (validated fields): the same source_id again updates the same link."""
        with self.lock:
            return self._links.upsert_integration(
                grant.user_id, grant.org_id, grant.client_id, fields
            )

    def delete_integration(self, grant: Grant, source_id: str) -> None:
        with self.lock:
            self._links.delete_integration(grant.user_id, grant.org_id, grant.client_id, source_id)

    def user_links(
        self, grant: Grant, skip: int = 0, limit: int = 100
    ) -> tuple[list[dict[str, Any]], bool]:
        """The token user's links in the token's org, all sources, oldest first."""
        with self.lock:
            return self._links.owned(grant.user_id, grant.org_id, skip, limit)

    def get_user_link(self, grant: Grant, link_id: str) -> dict[str, Any]:
        with self.lock:
            return self._links.get_owned(grant.user_id, grant.org_id, link_id)

    def create_manual_link(self, grant: Grant, fields: Mapping[str, Any]) -> dict[str, Any]:
        with self.lock:
            return self._links.create_manual(grant.user_id, grant.org_id, fields)

    def update_manual_link(
        self, grant: Grant, link_id: str, fields: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Only MANUAL links change through /scheduling_link/{id}/ (400 for the others)."""
        with self.lock:
            return self._links.update_manual(grant.user_id, grant.org_id, link_id, fields)

    def delete_manual_link(self, grant: Grant, link_id: str) -> None:
        with self.lock:
            self._links.delete_manual(grant.user_id, grant.org_id, link_id)

    def links(self, user_id: str | None = None, org_id: str | None = None) -> list[dict[str, Any]]:
        """Every user link (all sources, all apps), oldest first, optionally filtered."""
        with self.lock:
            return self._links.user_links(user_id, org_id)

    def add_manual_link(
        self, user_id: str, org_id: str, name: str, url: str, **extra: Any
    ) -> dict[str, Any]:
        """A link the user made by hand in Close (`extra` may set description,
        duration_in_minutes, or source="CALENDLY" and the like)."""
        with self.lock:
            return self._links.add(user_id, org_id, name=name, url=url, **extra)

    def delete_link(self, link_id: str) -> bool:
        """A human deletes a link in Close's UI (any source). Returns whether it existed."""
        with self.lock:
            return self._links.delete(link_id)

    # Shared scheduling links -------------------------------------------------------------

    # Every shared-link endpoint needs Manage Customizations in the token's org (close-api.md),
    # checked before anything else: without it a user learns nothing, not even what exists.
    # The one exception is mapping a shared link to one's own user link (`map_shared`).

    def list_shared(
        self, grant: Grant, skip: int = 0, limit: int = 100
    ) -> tuple[list[dict[str, Any]], bool]:
        with self.lock:
            self._require_customizations(grant)
            found = self._links.shared_links(grant.org_id)
        return _page(found, skip, limit)

    def get_shared(self, grant: Grant, shared_id: str) -> dict[str, Any]:
        with self.lock:
            self._require_customizations(grant)
            return self._links.get_shared(grant.org_id, shared_id)

    def create_shared(self, grant: Grant, fields: Mapping[str, Any]) -> dict[str, Any]:
        with self.lock:
            self._require_customizations(grant)
            return self._links.create_shared(grant.org_id, fields)

    def update_shared(
        self, grant: Grant, shared_id: str, fields: Mapping[str, Any]
    ) -> dict[str, Any]:
        with self.lock:
            self._require_customizations(grant)
            return self._links.update_shared(grant.org_id, shared_id, fields)

    def delete_shared(self, grant: Grant, shared_id: str) -> None:
        with self.lock:
            self._require_customizations(grant)
            self._links.delete_shared(grant.org_id, shared_id)

    def map_shared(self, grant: Grant, body: Mapping[str, Any]) -> dict[str, Any]:
        """Map a shared link, for one user, to one of that user's links or a plain URL.
        Allowed with Manage Customizations, or for the owner of the user link: a user may map
        a shared link, for themselves, to a link of their own in the token's org."""
        request = parse_mapping(body)
        with self.lock:
            if request.org_id != grant.org_id:
                raise not_found()
            if not self._owns_target(grant, request.user_id, request.target, request.value):
                self._require_customizations(grant)
            if not self._directory.is_member(request.user_id, request.org_id):
                raise validation_error({"user_id": "Not a member of this organization."})
            return self._links.map(request)

    def unmap_shared(self, grant: Grant, body: Mapping[str, Any]) -> None:
        """Remove a mapping: Manage Customizations, or the owner of the user link it points
        at (so a user can undo what they could do themselves, not an admin's URL mapping)."""
        key = parse_unmapping(body)
        with self.lock:
            if key[0] != grant.org_id:
                raise not_found()
            mapping = self._links.mapping(key)
            target = "user_scheduling_link_id"
            if mapping is None or not self._owns_target(grant, key[2], target, mapping.get(target)):
                self._require_customizations(grant)
            self._links.unmap(key)

    def shared_links(self, org_id: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return self._links.shared_links(org_id)

    def associations(self, org_id: str | None = None) -> list[dict[str, Any]]:
        """Every shared-link mapping (of one org)."""
        with self.lock:
            return self._links.mappings(org_id)

    def _require_customizations(self, grant: Grant) -> None:
        if not self._directory.may(grant.user_id, grant.org_id, MANAGE_CUSTOMIZATIONS):
            raise SandboxError(403, NEEDS_CUSTOMIZATIONS)

    def _owns_target(self, grant: Grant, user_id: str, target: str, value: Any) -> bool:
        """Whether a mapping for `user_id` to `target` is the token user's own business: for
        themselves, to one of their own links in the token's org."""
        return (
            target == "user_scheduling_link_id"
            and user_id == grant.user_id
            and isinstance(value, str)
            and self._links.owner_of(value) == (grant.user_id, grant.org_id)
        )

    # Inspection --------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The whole world as JSON-able data (`GET /_sandbox/state`)."""
        with self.lock:
            revoked = sum(g.revoked for g in self.grants.values())
            return {
                "orgs": [o.public() for o in self._directory.orgs.values()],
                "users": [
                    {**u.public(), "organizations": u.organizations}
                    for u in self._directory.users.values()
                ],
                "memberships": [
                    self._directory.member_view(u, org_id)
                    for u in self._directory.users.values()
                    for org_id in u.organizations
                ],
                "links": self._links.user_links(),
                "shared_links": self._links.shared_links(),
                "associations": self._links.mappings(),
                "grants": {
                    "total": len(self.grants),
                    "active": len(self.grants) - revoked,
                    "revoked": revoked,
                },
                "access_tokens": len(self.access_tokens),
                "faults": self.faults.to_dict(),
                "config": dataclasses.asdict(self.config),
            }

    # Persistence (dev) -------------------------------------------------------------------

    @property
    def persists(self) -> bool:
        return self.state_path is not None

    def save(self) -> None:
        """Write the world to `state_path` (atomically); nothing without one. Config, faults,
        rate buckets, call counts and pending authorization codes are not saved."""
        if self.state_path is None:
            return
        with self._save_lock:
            persistence.write_atomically(self.state_path, self.export())

    def load(self) -> bool:
        """Replace the world with the one saved at `state_path`, if there is one. Returns
        whether a file was loaded; ValueError if it cannot be read."""
        if self.state_path is None:
            return False
        data = persistence.read(self.state_path)
        if data is None:
            return False
        try:
            self.restore(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{self.state_path}: broken sandbox state ({exc!r})") from None
        return True

    def export(self) -> dict[str, Any]:
        """Users, orgs, memberships, grants with their tokens, links, shared links and mappings
        as JSON-able data. Token expiry is kept as wall-clock time (the state's clock is
        monotonic, which means nothing in another process)."""
        with self.lock:
            now, wall = self.clock(), time.time()
            return {
                "directory": self._directory.to_data(),
                "grants": [dataclasses.asdict(g) for g in self.grants.values()],
                "access_tokens": [
                    {"token": token, "grant_id": grant_id, "expires_at": wall + (expiry - now)}
                    for token, (grant_id, expiry) in self.access_tokens.items()
                ],
                "links": self._links.to_data(),
            }

    def restore(self, data: Mapping[str, Any]) -> None:
        """The world `export()` gave; config, faults and counters stay as they are."""
        directory = Directory.from_data(data["directory"])
        grants = {g["id"]: Grant(**g) for g in data["grants"]}
        links = LinkStore.from_data(data["links"])
        with self.lock:
            now, wall = self.clock(), time.time()
            self._directory = directory
            self.grants = grants
            self.refresh_index = {g.refresh_token: g.id for g in grants.values() if not g.revoked}
            self.access_tokens = {
                t["token"]: (t["grant_id"], now + (float(t["expires_at"]) - wall))
                for t in data["access_tokens"]
            }
            self.codes = {}
            self._links = links
