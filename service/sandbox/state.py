"""The Close sandbox's in-memory world: users, orgs, grants, tokens, links, rate buckets, faults.

Faithful to close-api.md: rotating refresh tokens (a used one dies at once), expiring access
tokens, revocation, THIRD_PARTY links keyed by (user, OAuth app, source_id), per-group rate
limits per token and (3x) per organization. One lock guards everything; nothing sleeps under it.
"""

from __future__ import annotations

import copy
import math
import random
import re
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

SANDBOX_CLIENTS = {"linksync-sandbox": "sandbox-secret"}


@dataclass
class SandboxConfig:
    access_token_ttl: float = 3600.0
    clients: dict[str, str] = field(default_factory=lambda: dict(SANDBOX_CLIENTS))
    rate_limit_per_token: float = 20.0
    rate_limit_per_org: float | None = None  # None: three times the per-token limit
    rate_limits_enabled: bool = True
    latency_ms: float = 0.0
    code_ttl: float = 600.0

    @property
    def org_limit(self) -> float:
        return self.rate_limit_per_org or self.rate_limit_per_token * 3


@dataclass
class Faults:
    latency_ms: float = 0.0
    error_rate: float = 0.0
    error_status: int | None = None  # None: one of 500/502/503 at random
    timeout_rate: float = 0.0
    timeout_seconds: float = 10.0
    timeout_applies_write: bool = False
    fail_next: int = 0
    fail_status: int = 503
    groups: list[str] | None = None

    def applies_to(self, group: str) -> bool:
        return self.groups is None or group in self.groups


@dataclass
class Grant:
    id: str
    client_id: str
    user_id: str
    org_id: str
    refresh_token: str
    revoked: bool = False


@dataclass
class Bucket:
    rate: float
    level: float
    stamp: float

    def refill(self, now: float, capacity: float) -> None:
        self.level = min(capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


def template_tag(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


class SandboxState:
    def __init__(self, config: SandboxConfig | None = None, seed: int = 0) -> None:
        self._initial = config or SandboxConfig()
        self.config = copy.deepcopy(self._initial)
        self.lock = threading.RLock()
        self.rng = random.Random(seed)  # noqa: S311 - fault injection, not security
        self.reset()

    # Seed data and reset ----------------------------------------------------------------

    def reset(self) -> None:
        with self.lock:
            self.config = copy.deepcopy(self._initial)
            self.faults = Faults()
            self.orgs: dict[str, dict[str, Any]] = {}
            self.users: dict[str, dict[str, Any]] = {}
            self.codes: dict[str, dict[str, Any]] = {}
            self.grants: dict[str, Grant] = {}
            self.refresh_index: dict[str, str] = {}
            self.access_tokens: dict[str, tuple[str, float]] = {}  # token -> (grant, expiry)
            self._links: dict[str, dict[str, Any]] = {}
            self.integration_index: dict[tuple[str, str, str], str] = {}
            self.shared_links: dict[str, dict[str, Any]] = {}
            self.associations: dict[tuple[str, str, str], dict[str, Any]] = {}
            self.buckets: dict[str, Bucket] = {}
            self.calls: Counter[str] = Counter()
            self.add_org("orga_acme", "Acme Inc.")
            self.add_org("orga_globex", "Globex Corp.")
            self.add_user(
                "user_jane", "Jane", "Doe", "jane@acme.com", ["orga_acme", "orga_globex"], True
            )
            self.add_user("user_john", "John", "Smith", "john@acme.com", ["orga_acme"], False)
            self.add_user("user_ann", "Ann", "Lee", "ann@globex.com", ["orga_globex"], True)

    def reset_calls(self) -> None:
        with self.lock:
            self.calls.clear()

    def add_org(self, org_id: str, name: str) -> None:
        with self.lock:
            self.orgs[org_id] = {"id": org_id, "name": name}

    def add_user(
        self,
        user_id: str,
        first_name: str,
        last_name: str,
        email: str,
        org_ids: list[str],
        can_manage_customizations: bool = False,
    ) -> None:
        with self.lock:
            for org_id in org_ids:
                self.orgs.setdefault(org_id, {"id": org_id, "name": org_id})
            self.users[user_id] = {
                "id": user_id,
                "first_name": first_name,
                "last_name": last_name,
                "email": email,
                "organizations": list(org_ids),
                "can_manage_customizations": can_manage_customizations,
            }

    def set_faults(self, **values: Any) -> None:
        with self.lock:
            self.faults = Faults(**values)

    # OAuth ------------------------------------------------------------------------------

    def client_ok(self, client_id: str | None, secret: str | None) -> bool:
        expected = self.config.clients.get(client_id or "")
        return expected is not None and secrets.compare_digest(expected, secret or "")

    def create_code(self, client_id: str, redirect_uri: str, user_id: str, org_id: str) -> str:
        code = "sbx_code_" + secrets.token_urlsafe(18)
        with self.lock:
            self.codes[code] = {
                "client_id": client_id,
                "redirect_uri": redirect_uri,
                "user_id": user_id,
                "org_id": org_id,
                "expires": time.time() + self.config.code_ttl,
            }
        return code

    def _issue(self, grant: Grant) -> dict[str, Any]:
        access = "sbx_at_" + secrets.token_urlsafe(24)
        refresh = "sbx_rt_" + secrets.token_urlsafe(24)
        self.refresh_index.pop(grant.refresh_token, None)
        grant.refresh_token = refresh
        self.refresh_index[refresh] = grant.id
        ttl = self.config.access_token_ttl
        self.access_tokens[access] = (grant.id, time.time() + ttl)
        return {
            "token_type": "Bearer",
            "access_token": access,
            "expires_in": int(ttl) if ttl >= 1 else ttl,
            "refresh_token": refresh,
            "scope": "all.full_access offline_access",
            "organization_id": grant.org_id,
            "user_id": grant.user_id,
        }

    def issue_tokens(self, client_id: str, user_id: str, org_id: str) -> dict[str, Any]:
        """A fresh grant without the browser (tests and benchmarks)."""
        with self.lock:
            grant = Grant("grant_" + secrets.token_hex(8), client_id, user_id, org_id, "")
            self.grants[grant.id] = grant
            return self._issue(grant)

    def exchange_code(
        self, code: str, client_id: str, redirect_uri: str | None
    ) -> dict[str, Any] | str:
        """Token response, or an OAuth error code."""
        with self.lock:
            self.calls["oauth:authorization_code"] += 1
            data = self.codes.pop(code, None)  # single use, even when the rest is wrong
            if data is None or data["expires"] < time.time() or data["client_id"] != client_id:
                self.calls["oauth:invalid_grant"] += 1
                return "invalid_grant"
            if redirect_uri is not None and redirect_uri != data["redirect_uri"]:
                self.calls["oauth:invalid_grant"] += 1
                return "invalid_grant"
            return self.issue_tokens(client_id, data["user_id"], data["org_id"])

    def refresh(self, refresh_token: str, client_id: str) -> dict[str, Any] | str:
        with self.lock:
            self.calls["oauth:refresh_token"] += 1
            grant_id = self.refresh_index.get(refresh_token)
            grant = self.grants.get(grant_id or "")
            if grant is None or grant.revoked or grant.client_id != client_id:
                self.calls["oauth:invalid_grant"] += 1
                return "invalid_grant"
            return self._issue(grant)  # rotation: the used refresh token is gone now

    def revoke_token(self, token: str) -> None:
        with self.lock:
            self.calls["oauth:revoke"] += 1
            grant_id = self.refresh_index.get(token) or self.access_tokens.get(token, ("", 0))[0]
            if grant_id:
                self._revoke_grant(grant_id)

    def _revoke_grant(self, grant_id: str) -> None:
        grant = self.grants.get(grant_id)
        if grant is None:
            return
        grant.revoked = True
        self.refresh_index.pop(grant.refresh_token, None)
        for token in [t for t, (g, _) in self.access_tokens.items() if g == grant_id]:
            del self.access_tokens[token]

    def revoke_grant(self, user_id: str, client_id: str | None = None) -> int:
        """The user removes the app in Close: every grant of theirs dies."""
        with self.lock:
            victims = [
                g.id
                for g in self.grants.values()
                if g.user_id == user_id and (client_id is None or g.client_id == client_id)
            ]
            for grant_id in victims:
                self._revoke_grant(grant_id)
            return len(victims)

    def expire_access_tokens(self) -> None:
        with self.lock:
            for token, (grant_id, _) in list(self.access_tokens.items()):
                self.access_tokens[token] = (grant_id, 0.0)

    def authenticate(self, token: str) -> Grant | str:
        with self.lock:
            entry = self.access_tokens.get(token)
            if entry is None:
                return "invalid access token"
            grant = self.grants.get(entry[0])
            if grant is None or grant.revoked:
                return "access token revoked"
            if entry[1] <= time.time():
                return "access token expired"
            return grant

    # Rate limits ------------------------------------------------------------------------

    def take(self, group: str, token_key: str, org_id: str) -> tuple[bool, dict[str, str], float]:
        """Spend one request; return (allowed, headers, seconds until one is free)."""
        now = time.monotonic()
        limit, org_limit = self.config.rate_limit_per_token, self.config.org_limit
        with self.lock:
            tok = self._bucket(f"tok:{group}:{token_key}", limit, now)
            org = self._bucket(f"org:{group}:{org_id}", org_limit, now)
            allowed = not self.config.rate_limits_enabled or (tok.level >= 1 and org.level >= 1)
            if allowed:
                tok.level -= 1
                org.level -= 1
            # Report the tighter bucket: what remains, and when it is full again.
            tighter, capacity = (
                (tok, limit) if tok.level / limit <= org.level / org_limit else (org, org_limit)
            )
            remaining = max(0, math.floor(tighter.level))
            reset = (capacity - tighter.level) / tighter.rate
            wait = 0.0 if allowed else max((1 - tighter.level) / tighter.rate, 0.001)
            if not allowed:
                self.calls["429"] += 1
                self.calls[f"429:{group}"] += 1
        headers = {
            "RateLimit": f"limit={limit:g}, remaining={remaining}, reset={reset:.3f}",
            "RateLimit-Policy": f'{limit:g};w=1, {org_limit:g};w=1;comment="organization"',
        }
        return allowed, headers, wait

    def _bucket(self, key: str, rate: float, now: float) -> Bucket:
        bucket = self.buckets.get(key)
        if bucket is None or bucket.rate != rate:
            bucket = self.buckets[key] = Bucket(rate=rate, level=rate, stamp=now)
        bucket.refill(now, rate)
        return bucket

    # Links ------------------------------------------------------------------------------

    def _new_link(self, **fields: Any) -> dict[str, Any]:
        now = _now_iso()
        link: dict[str, Any] = {
            "id": "schlnk_" + secrets.token_hex(10),
            "type": "USER",
            "source": "MANUAL",
            "source_id": None,
            "source_type": None,
            "name": None,
            "url": None,
            "description": None,
            "duration_in_minutes": None,
            "user_id": None,
            "organization_id": None,
            "oauth_client_id": None,
            "template_tag": None,
            "date_created": now,
            "date_updated": now,
        }
        link.update(fields)
        self._links[link["id"]] = link
        return link

    def upsert_integration(self, grant: Grant, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            key = (grant.user_id, grant.client_id, str(body["source_id"]))
            fields: dict[str, Any] = {
                k: body.get(k)
                for k in ("name", "url", "description", "source_type", "duration_in_minutes")
                if k in body
            }
            link_id = self.integration_index.get(key)
            if link_id and link_id in self._links:
                link = self._links[link_id]
                link.update(fields)
                link["date_updated"] = _now_iso()
            else:
                link = self._new_link(
                    source="THIRD_PARTY",
                    source_id=str(body["source_id"]),
                    user_id=grant.user_id,
                    organization_id=grant.org_id,
                    oauth_client_id=grant.client_id,
                    **fields,
                )
                self.integration_index[key] = link["id"]
            return copy.deepcopy(link)

    def delete_integration(self, grant: Grant, source_id: str) -> bool:
        with self.lock:
            link_id = self.integration_index.pop((grant.user_id, grant.client_id, source_id), None)
            return link_id is not None and self._links.pop(link_id, None) is not None

    def user_links(self, user_id: str, org_id: str) -> list[dict[str, Any]]:
        with self.lock:
            found = [
                copy.deepcopy(link)
                for link in self._links.values()
                if link["type"] == "USER"
                and link["user_id"] == user_id
                and link["organization_id"] == org_id
            ]
        return sorted(found, key=lambda link: (link["date_created"], link["id"]))

    def links(self, user_id: str | None = None, org_id: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [
                copy.deepcopy(link)
                for link in self._links.values()
                if (user_id is None or link["user_id"] == user_id)
                and (org_id is None or link["organization_id"] == org_id)
            ]

    def add_manual_link(
        self, user_id: str, org_id: str, name: str, url: str, **extra: Any
    ) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(
                self._new_link(user_id=user_id, organization_id=org_id, name=name, url=url, **extra)
            )

    def delete_link(self, link_id: str) -> bool:
        """A human deletes a link in Close's UI (any source)."""
        with self.lock:
            link = self._links.pop(link_id, None)
            if link is None:
                return False
            if link["source"] == "THIRD_PARTY":
                self.integration_index.pop(
                    (link["user_id"], link["oauth_client_id"], link["source_id"]), None
                )
            return True

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "orgs": list(self.orgs.values()),
                "users": [{k: v for k, v in u.items()} for u in self.users.values()],
                "links": [copy.deepcopy(link) for link in self._links.values()],
                "shared_links": [copy.deepcopy(s) for s in self.shared_links.values()],
                "associations": [copy.deepcopy(a) for a in self.associations.values()],
                "grants": {
                    "total": len(self.grants),
                    "revoked": sum(g.revoked for g in self.grants.values()),
                },
            }
