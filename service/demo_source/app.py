"""The built-in demo event-type source: the integrator's API contract, served by us.

Used when SOURCE_URL is unset (`linksync dev`), and by the tests and benchmarks as the
integrator's side. Data lives in a JSON file (`{"accounts": {id: [event types]}, "members":
{id: [members]}}`) that a human may edit while it runs, or in memory. An account without a
"members" entry has no team (its members listing answers 404), exactly like a source that
predates teams; the demo account (`demo-account`) comes with a team.

Contract details we chose: the ETag covers the whole account listing and is answered on every
page; `If-None-Match` is honoured on the first page. A cursor carries the offset and the ETag
of the listing it belongs to; if the listing changed between pages the cursor is refused with
409, so a client never stitches two versions together (it restarts on its next run).
"""

from __future__ import annotations

import base64
import builtins
import copy
import hashlib
import json
import os
import random
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from flask import Flask, Response, jsonify, request

from service.demo_source.integrator import DemoIntegrator, register_integrator

MAX_PAGE = 500

DEFAULT_SET = [
    ("15-min-chat", "15-min chat", "A quick call to answer questions.", 15, "One-on-one", True),
    (
        "30-min-intro",
        "30-min intro call",
        "A first conversation about your needs.",
        30,
        "One-on-one",
        True,
    ),
    (
        "product-demo",
        "Product demo",
        "A guided tour of the product for your team.",
        45,
        "Group",
        True,
    ),
    (
        "team-onboarding",
        "Team onboarding",
        "Get your team set up with an expert.",
        60,
        "Round robin",
        True,
    ),
    ("legacy-consultation", "Legacy consultation", "No longer offered.", 60, "One-on-one", False),
]

DEMO_ACCOUNT = "demo-account"

# The demo account's team: Jane (the Close admin), three reps who are in the Close org, and one
# member whose email is not (so coverage has someone to explain).
DEMO_MEMBERS = [
    ("m_jane", "jane@acme.com", "Jane Doe"),
    ("m_bob", "bob@acme.com", "Bob Brown"),
    ("m_carol", "carol@acme.com", "Carol White"),
    ("m_dave", "dave@acme.com", "Dave Green"),
    ("m_zoe", "zoe@example.com", "Zoe Quinn"),
]
# Team templates (managed event types) and who books them.
DEMO_MANAGED = [
    (
        "discovery-call",
        "Discovery call",
        "Book a discovery call with your rep.",
        30,
        "Round robin",
        ["m_jane", "m_bob", "m_carol", "m_zoe"],
    ),
    (
        "pricing-review",
        "Pricing review",
        "Walk through plans and pricing.",
        45,
        "One-on-one",
        ["m_carol", "m_dave"],
    ),
]


def team_members(members: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
    return [{"id": mid, "email": email, "name": name} for mid, email, name in members]


def team_event_types(account_id: str) -> list[dict[str, Any]]:
    """Each member's personal event type and the managed ones with their assignments."""
    base = f"https://book.example.com/{account_id}"
    personal = [
        {
            "id": f"{account_id}-{mid}-meeting",
            "name": f"30-min meeting with {name.split()[0]}",
            "url": f"{base}/{mid}/meeting",
            "description": f"Talk to {name}.",
            "duration_minutes": 30,
            "kind": "One-on-one",
            "active": True,
            "owner_id": mid,
        }
        for mid, _email, name in DEMO_MEMBERS
    ]
    managed = [
        {
            "id": f"{account_id}-{slug}",
            "name": name,
            "url": f"{base}/team/{slug}",
            "description": description,
            "duration_minutes": minutes,
            "kind": kind,
            "active": True,
            "managed": True,
            "assignments": [{"member_id": m, "url": f"{base}/{m}/{slug}"} for m in assigned],
        }
        for slug, name, description, minutes, kind, assigned in DEMO_MANAGED
    ]
    return personal + managed


WORDS = ["Intro", "Demo", "Strategy", "Onboarding", "Review", "Check-in", "Kickoff", "Support"]
KINDS = ["One-on-one", "Group", "Round robin", "Collective"]


class Listing(NamedTuple):
    items: list[dict[str, Any]]
    etag: str


def event_types_etag(items: list[dict[str, Any]]) -> str:
    canonical = json.dumps(items, sort_keys=True, separators=(",", ":"))
    return '"' + hashlib.sha256(canonical.encode()).hexdigest()[:32] + '"'


def default_event_types(account_id: str) -> list[dict[str, Any]]:
    return [
        {
            "id": f"{account_id}-{slug}",
            "name": name,
            "url": f"https://book.example.com/{account_id}/{slug}",
            "description": description,
            "duration_minutes": minutes,
            "kind": kind,
            "active": active,
        }
        for slug, name, description, minutes, kind, active in DEFAULT_SET
    ]


def generated_event_types(account_id: str, count: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)  # noqa: S311 - sample data
    return [
        {
            "id": f"evt_{account_id}_{n}",
            "name": f"{rng.choice(WORDS)} {n}",
            "url": f"https://book.example.com/{account_id}/event-{n}",
            "description": f"Generated event type {n} for {account_id}.",
            "duration_minutes": rng.choice([15, 30, 45, 60]),
            "kind": rng.choice(KINDS),
            "active": True,
        }
        for n in range(1, count + 1)
    ]


@dataclass
class DemoFaults:
    """Switches for tests: failing pages, random errors, latency, a number of failing calls."""

    fail_pages: list[int] = field(default_factory=list)  # 1-based page numbers answering 503
    fail_status: int = 503
    error_rate: float = 0.0
    latency_ms: float = 0.0
    fail_next: int = 0
    rng: random.Random = field(default_factory=lambda: random.Random(0))  # noqa: S311

    def clear(self) -> None:
        self.fail_pages, self.fail_status, self.error_rate = [], 503, 0.0
        self.latency_ms, self.fail_next = 0.0, 0

    def update(self, values: dict[str, Any]) -> None:
        self.clear()
        self.fail_pages = [int(p) for p in values.get("fail_pages", [])]
        self.fail_status = int(values.get("fail_status", 503))
        self.error_rate = float(values.get("error_rate", 0.0))
        self.latency_ms = float(values.get("latency_ms", 0.0))
        self.fail_next = int(values.get("fail_next", 0))


class DemoSourceStore:
    def __init__(self, path: Path | None = None, *, auto_create: bool = True) -> None:
        self.path = path
        self.auto_create = auto_create
        self._lock = threading.RLock()
        self._accounts: dict[str, list[dict[str, Any]]] = {}
        self._members: dict[str, list[dict[str, Any]]] = {}
        self._mtime: float | None = None
        # What the contract's endpoints serve, computed once per change of the store (a big
        # account's listing is paged in 100s: re-copying and re-hashing it for every page
        # made the source the slow part of a 10,000-type sync). Key: (kind, account id).
        self._version = 0
        self._served: dict[tuple[str, str], tuple[int, Listing | None]] = {}
        if path is not None and path.exists():
            self._load()

    # Persistence ------------------------------------------------------------------------

    def _load(self) -> None:
        assert self.path is not None
        data = json.loads(self.path.read_text() or "{}")
        accounts = data.get("accounts", {}) if isinstance(data, dict) else {}
        self._accounts = {str(k): list(v) for k, v in accounts.items() if isinstance(v, list)}
        members = data.get("members", {}) if isinstance(data, dict) else {}
        self._members = (
            {str(k): list(v) for k, v in members.items() if isinstance(v, list)}
            if isinstance(members, dict)
            else {}
        )
        self._mtime = self.path.stat().st_mtime
        self._version += 1

    def _refresh(self) -> None:
        """Pick up a hand edit of the file."""
        if self.path is None or not self.path.exists():
            return
        if self.path.stat().st_mtime != self._mtime:
            try:
                self._load()
            except (OSError, ValueError):
                pass  # a half-saved edit: keep serving the last good data

    def _save(self) -> None:
        self._version += 1
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".demo-source.")
        with os.fdopen(fd, "w") as handle:
            data: dict[str, Any] = {"accounts": self._accounts}
            if self._members:
                data["members"] = self._members
            json.dump(data, handle, indent=2)
        os.replace(tmp, self.path)
        self._mtime = self.path.stat().st_mtime

    # Reads and writes -------------------------------------------------------------------

    def list(self, account_id: str) -> builtins.list[dict[str, Any]] | None:
        with self._lock:
            self._refresh()
            items = self._accounts.get(account_id)
            if items is None and self.auto_create:
                items = self.ensure_account(account_id)
            return copy.deepcopy(items) if items is not None else None

    def listing(self, account_id: str) -> Listing | None:
        """The account's event types as the contract serves them, with their ETag (None: no
        such account). Shared and cached until the next change: callers must not mutate."""
        return self._serve("event-types", account_id, self.list)

    def member_listing(self, account_id: str) -> Listing | None:
        """The account's team with its ETag (None: no team). Cached like `listing`."""
        return self._serve("members", account_id, self.members)

    def _serve(
        self,
        kind: str,
        account_id: str,
        read: Callable[[str], builtins.list[dict[str, Any]] | None],
    ) -> Listing | None:
        with self._lock:
            self._refresh()
            cached = self._served.get((kind, account_id))
            if cached is not None and cached[0] == self._version:
                return cached[1]
            items = read(account_id)  # a copy, taken under the lock
            served = None if items is None else Listing(items, event_types_etag(items))
            self._served[(kind, account_id)] = (self._version, served)
            return served

    def ensure_account(self, account_id: str) -> builtins.list[dict[str, Any]]:
        with self._lock:
            self._refresh()
            if account_id not in self._accounts:
                self._accounts[account_id] = default_event_types(account_id)
                if account_id == DEMO_ACCOUNT:
                    self._accounts[account_id] += team_event_types(account_id)
                    self._members[account_id] = team_members(DEMO_MEMBERS)
                self._save()
            return self._accounts[account_id]

    def members(self, account_id: str) -> builtins.list[dict[str, Any]] | None:
        """The account's team, or None when it has none (the source answers 404)."""
        with self._lock:
            self._refresh()
            if account_id not in self._accounts and self.auto_create:
                self.ensure_account(account_id)
            items = self._members.get(account_id)
            return copy.deepcopy(items) if items is not None else None

    def put_members(self, account_id: str, members: builtins.list[dict[str, Any]] | None) -> None:
        """Replace the account's team (None: the account has no team)."""
        with self._lock:
            if members is None:
                self._members.pop(account_id, None)
            else:
                self._members[account_id] = copy.deepcopy(members)
            self._save()

    def put_all(self, account_id: str, event_types: builtins.list[dict[str, Any]]) -> None:
        with self._lock:
            self._accounts[account_id] = copy.deepcopy(event_types)
            self._save()

    def upsert(self, account_id: str, event_type: dict[str, Any]) -> None:
        with self._lock:
            items = self._accounts.setdefault(account_id, [])
            for i, item in enumerate(items):
                if item.get("id") == event_type.get("id"):
                    items[i] = copy.deepcopy(event_type)
                    break
            else:
                items.append(copy.deepcopy(event_type))
            self._save()

    def update(self, account_id: str, event_type_id: str, **fields: Any) -> dict[str, Any]:
        with self._lock:
            for item in self._accounts.get(account_id, []):
                if item.get("id") == event_type_id:
                    item.update(fields)
                    self._save()
                    return copy.deepcopy(item)
            raise KeyError(event_type_id)

    def delete(self, account_id: str, event_type_id: str) -> None:
        with self._lock:
            items = self._accounts.get(account_id, [])
            remaining = [item for item in items if item.get("id") != event_type_id]
            if len(remaining) == len(items):
                raise KeyError(event_type_id)
            self._accounts[account_id] = remaining
            self._save()

    def delete_account(self, account_id: str) -> None:
        with self._lock:
            self._accounts.pop(account_id, None)
            self._members.pop(account_id, None)
            self._save()

    def generate(self, account_id: str, count: int, seed: int = 0) -> None:
        self.put_all(account_id, generated_event_types(account_id, count, seed))


@dataclass
class Stats:
    counts: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def hit(self, key: str) -> None:
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + 1
            self.counts["total"] = self.counts.get("total", 0) + 1


def _cursor(offset: int, etag: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([offset, etag]).encode()).decode()


def _uncursor(cursor: str) -> tuple[int, str]:
    offset, etag = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    return int(offset), str(etag)


def create_demo_source_app(
    store: DemoSourceStore,
    token: str,
    page_size: int = 100,
    faults: DemoFaults | None = None,
    stats: Stats | None = None,
    integrator: DemoIntegrator | None = None,
) -> Flask:
    app = Flask(__name__)
    faults = faults or DemoFaults()
    stats = stats or Stats()
    app.extensions["demo"] = (store, faults, stats)
    if integrator is not None:
        register_integrator(app, integrator)

    def error(status: int, message: str) -> tuple[Response, int]:
        stats.hit(str(status) if status in (304, 404) else "errors")
        return jsonify(error=message), status

    def paged(listing: Listing | None) -> Any:
        """One page of a listing, with the contract's ETag and cursor rules."""
        if request.headers.get("Authorization") != f"Bearer {token}":
            return error(401, "missing or wrong bearer token")
        if faults.latency_ms:
            time.sleep(faults.latency_ms / 1000)
        if faults.fail_next > 0:
            faults.fail_next -= 1
            return error(faults.fail_status, "injected failure")
        if faults.error_rate and faults.rng.random() < faults.error_rate:
            return error(faults.fail_status, "injected failure")
        if listing is None:
            return error(404, "account not found")
        items, etag = listing.items, listing.etag
        cursor = request.args.get("cursor")
        offset = 0
        if cursor:
            try:
                offset, cursor_etag = _uncursor(cursor)
            except (ValueError, TypeError):
                return error(400, "invalid cursor")
            if cursor_etag != etag:
                return error(409, "the listing changed since this cursor was issued")
        elif request.headers.get("If-None-Match") == etag:
            stats.hit("304")
            return Response(status=304, headers={"ETag": etag})
        try:
            limit = min(int(request.args.get("limit", page_size)), MAX_PAGE)
        except ValueError:
            return error(400, "limit must be an integer")
        page_number = offset // max(limit, 1) + 1
        if page_number in faults.fail_pages:
            return error(faults.fail_status, f"injected failure on page {page_number}")
        data = items[offset : offset + limit]
        following = offset + limit
        body = {
            "data": data,
            "next_cursor": _cursor(following, etag) if following < len(items) else None,
        }
        stats.hit("200")
        response = jsonify(body)
        response.headers["ETag"] = etag
        return response

    @app.get("/accounts/<account_id>/event-types")
    def event_types(account_id: str) -> Any:
        return paged(store.listing(account_id))

    @app.get("/accounts/<account_id>/members")
    def members(account_id: str) -> Any:
        return paged(store.member_listing(account_id))

    # Control endpoints for tests, benchmarks and humans (not part of the contract) ------

    @app.get("/_demo/accounts/<account_id>/event-types")
    def get_all(account_id: str) -> Any:
        items = store.list(account_id)
        return (
            (jsonify(data=items), 200)
            if items is not None
            else (jsonify(error="account not found"), 404)
        )

    @app.put("/_demo/accounts/<account_id>/event-types")
    def put_all(account_id: str) -> Any:
        body = request.get_json(silent=True)
        items = body.get("data") if isinstance(body, dict) else body
        if not isinstance(items, list) or not all(isinstance(i, dict) and "id" in i for i in items):
            return jsonify(error="expected a list of event types, each with an id"), 400
        store.put_all(account_id, items)
        return jsonify(count=len(items))

    @app.patch("/_demo/accounts/<account_id>/event-types/<event_type_id>")
    def patch_one(account_id: str, event_type_id: str) -> Any:
        fields = request.get_json(silent=True)
        if not isinstance(fields, dict):
            return jsonify(error="expected a JSON object"), 400
        try:
            return jsonify(store.update(account_id, event_type_id, **fields))
        except KeyError:
            return jsonify(error="event type not found"), 404

    @app.delete("/_demo/accounts/<account_id>/event-types/<event_type_id>")
    def delete_one(account_id: str, event_type_id: str) -> Any:
        try:
            store.delete(account_id, event_type_id)
        except KeyError:
            return jsonify(error="event type not found"), 404
        return Response(status=204)

    @app.put("/_demo/accounts/<account_id>/members")
    def put_members(account_id: str) -> Any:
        body = request.get_json(silent=True)
        items = body.get("data") if isinstance(body, dict) else body
        if items is not None and (
            not isinstance(items, list) or not all(isinstance(i, dict) and "id" in i for i in items)
        ):
            return jsonify(error="expected a list of members, each with an id, or null"), 400
        store.put_members(account_id, items)
        return jsonify(count=len(items or []))

    @app.delete("/_demo/accounts/<account_id>")
    def delete_account(account_id: str) -> Any:
        store.delete_account(account_id)
        return Response(status=204)

    @app.post("/_demo/accounts/<account_id>/generate")
    def generate(account_id: str) -> Any:
        body = request.get_json(silent=True) or {}
        count = int(body.get("count", 100))
        store.generate(account_id, count, int(body.get("seed", 0)))
        return jsonify(count=count)

    @app.post("/_demo/faults")
    def set_faults() -> Any:
        faults.update(request.get_json(silent=True) or {})
        return jsonify(ok=True)

    @app.get("/_demo/stats")
    def get_stats() -> Any:
        return jsonify(stats.counts)

    @app.post("/_demo/stats/reset")
    def reset_stats() -> Any:
        with stats.lock:
            stats.counts.clear()
        return jsonify(ok=True)

    return app
