"""The Close sandbox's in-memory world: users, orgs, OAuth grants and tokens, scheduling links,
rate buckets, faults, and a call counter for tests.

Faithful to close-api.md: rotating refresh tokens (a used one dies at once), expiring access
tokens, revocation of a whole grant, THIRD_PARTY links keyed by (user, org, OAuth app,
source_id), per-group rate limits per token and (3x) per organization. One `threading.Lock`
guards everything (the link store and rate buckets included); public methods take it,
`_private` ones expect it held, and nothing sleeps under it. The HTTP layer only translates:
who may do what is decided here, what links are is `links.py`.
"""

from __future__ import annotations

import copy
import dataclasses
import random
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

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
class Org:
    id: str
    name: str

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name}


@dataclass
class User:
    id: str
    first_name: str
    last_name: str
    email: str
    organizations: list[str]
    can_manage_customizations: bool = False

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "email": self.email,
        }


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
    ) -> None:
        self._initial = copy.deepcopy(config or SandboxConfig())
        self._seed = seed
        self.clock = clock
        self.lock = threading.Lock()
        self.rng = random.Random(seed)  # noqa: S311 - fault injection, not security
        self.calls: Counter[str] = Counter()
        self._limiter = RateLimiter()
        self.reset()

    # Seed data, reset, directory ---------------------------------------------------------

    def reset(self) -> None:
        """Everything back to the seeded world: config, faults, tokens, links, counters."""
        with self.lock:
            self.config = copy.deepcopy(self._initial)
            self.faults = Faults()
            self.rng.seed(self._seed)
            self.calls.clear()
            self._limiter.clear()
            self.orgs: dict[str, Org] = {}
            self.users: dict[str, User] = {}
            self.codes: dict[str, AuthCode] = {}
            self.grants: dict[str, Grant] = {}
            self.refresh_index: dict[str, str] = {}  # refresh token -> grant id
            self.access_tokens: dict[str, tuple[str, float]] = {}  # token -> (grant id, expiry)
            self._links = LinkStore()
            self._add_org("orga_acme", "Acme Inc.")
            self._add_org("orga_globex", "Globex Corp.")
            self._add_user(
                "user_jane", "Jane", "Doe", "jane@acme.com", ["orga_acme", "orga_globex"], True
            )
            self._add_user("user_john", "John", "Smith", "john@acme.com", ["orga_acme"], False)
            self._add_user("user_ann", "Ann", "Lee", "ann@globex.com", ["orga_globex"], False)

    def reset_calls(self) -> None:
        with self.lock:
            self.calls.clear()

    def add_org(self, org_id: str, name: str) -> None:
        with self.lock:
            self._add_org(org_id, name)

    def add_user(
        self,
        user_id: str,
        first_name: str,
        last_name: str,
        email: str,
        org_ids: Iterable[str],
        can_manage_customizations: bool = False,
    ) -> None:
        """Add or replace a user; organizations not known yet are created, named by their id."""
        with self.lock:
            self._add_user(
                user_id, first_name, last_name, email, list(org_ids), can_manage_customizations
            )

    def _add_org(self, org_id: str, name: str) -> None:
        self.orgs[org_id] = Org(org_id, name)

    def _add_user(
        self,
        user_id: str,
        first_name: str,
        last_name: str,
        email: str,
        org_ids: list[str],
        can_manage_customizations: bool,
    ) -> None:
        for org_id in org_ids:
            if org_id not in self.orgs:
                self._add_org(org_id, org_id)
        self.users[user_id] = User(
            user_id, first_name, last_name, email, org_ids, can_manage_customizations
        )

    def directory(self) -> tuple[list[User], list[Org]]:
        """Copies of every user and org (the consent page lists them all)."""
        with self.lock:
            return (
                [copy.deepcopy(u) for u in self.users.values()],
                [copy.deepcopy(o) for o in self.orgs.values()],
            )

    def me(self, grant: Grant) -> dict[str, Any]:
        with self.lock:
            user = self._user(grant.user_id)
            orgs = [self.orgs[o].public() for o in user.organizations if o in self.orgs]
            return {**user.public(), "organizations": orgs}

    def org_users(self, grant: Grant, skip: int, limit: int) -> tuple[list[dict[str, Any]], bool]:
        with self.lock:
            members = [u.public() for u in self.users.values() if grant.org_id in u.organizations]
        return _page(members, skip, limit)

    def _user(self, user_id: str) -> User:
        user = self.users.get(user_id)
        if user is None:  # only if a test replaced the directory under a live token
            raise SandboxError(401, "The user of this token no longer exists.")
        return user

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
            user = self.users.get(user_id)
            if user is None:
                raise SandboxError(400, "Choose who you are signed in as.")
            if org_id not in user.organizations or org_id not in self.orgs:
                raise SandboxError(
                    400, f"{user.first_name} {user.last_name} is not a member of that organization."
                )
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
            user = self.users.get(user_id)
            if user is None:
                raise ValueError(f"unknown user {user_id!r}")
            if org_id not in self.orgs or org_id not in user.organizations:
                raise ValueError(f"{user_id} is not a member of {org_id!r}")
            return self._issue(self._new_grant(client_id, user_id, org_id))

    def revoke_grant(self, user_id: str, client_id: str | None = None) -> int:
        """The user removes the app in Close: every grant of theirs (for `client_id`, or for
        any app) dies with all its tokens. Returns how many grants died."""
        with self.lock:
            victims = [
                g
                for g in self.grants.values()
                if g.user_id == user_id
                and not g.revoked
                and (client_id is None or g.client_id == client_id)
            ]
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
            return copy.copy(grant)

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

    def list_shared(
        self, grant: Grant, skip: int = 0, limit: int = 100
    ) -> tuple[list[dict[str, Any]], bool]:
        with self.lock:
            found = self._links.shared_links(grant.org_id)
        return _page(found, skip, limit)

    def get_shared(self, grant: Grant, shared_id: str) -> dict[str, Any]:
        with self.lock:
            return self._links.get_shared(grant.org_id, shared_id)

    def create_shared(self, grant: Grant, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Shared-link writes need Manage Customizations (checked before the body)."""
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
        Allowed with Manage Customizations, or for the owner of the user link."""
        request = parse_mapping(body)
        with self.lock:
            if request.org_id != grant.org_id:
                raise not_found()
            member = self.users.get(request.user_id)
            if member is None or request.org_id not in member.organizations:
                raise validation_error({"user_id": "Not a member of this organization."})
            owns_target = (
                request.target == "user_scheduling_link_id"
                and request.user_id == grant.user_id
                and self._links.owner_of(request.value) == (grant.user_id, grant.org_id)
            )
            if not owns_target:
                self._require_customizations(grant)
            return self._links.map(request)

    def unmap_shared(self, grant: Grant, body: Mapping[str, Any]) -> None:
        """Remove a mapping: Manage Customizations, or the mapped user themselves."""
        key = parse_unmapping(body)
        with self.lock:
            if key[0] != grant.org_id:
                raise not_found()
            if key[2] != grant.user_id:
                self._require_customizations(grant)
            self._links.unmap(key)

    def shared_links(self, org_id: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return self._links.shared_links(org_id)

    def associations(self) -> list[dict[str, Any]]:
        """Every shared-link mapping."""
        with self.lock:
            return self._links.mappings()

    def _require_customizations(self, grant: Grant) -> None:
        if not self._user(grant.user_id).can_manage_customizations:
            raise SandboxError(403, NEEDS_CUSTOMIZATIONS)

    # Inspection --------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The whole world as JSON-able data (`GET /_sandbox/state`)."""
        with self.lock:
            revoked = sum(g.revoked for g in self.grants.values())
            return {
                "orgs": [o.public() for o in self.orgs.values()],
                "users": [dataclasses.asdict(u) for u in self.users.values()],
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
