"""Scheduling links as Close stores them: user links (MANUAL, THIRD_PARTY, ...), shared links
and the per-user mappings of shared links.

Not thread-safe on its own: `SandboxState` calls it under its lock and checks who may do what
(tokens, memberships, Manage Customizations); this module knows links. It hands out copies
(links are flat dicts of scalars, so a shallow copy is a full one): nothing outside the lock
ever holds a live link.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from service.sandbox.errors import SandboxError, not_found, validation_error
from service.sandbox.validation import REQUIRED, link_errors, template_tag, url_problem

INTEGRATION_FIELDS = ("name", "url", "description", "source_type", "duration_in_minutes")
MANUAL_FIELDS = ("name", "url", "description", "duration_in_minutes")
MAPPING_KEYS = ("organization_id", "shared_scheduling_link_id", "user_id")

Link = dict[str, Any]


@dataclass(frozen=True)
class MappingRequest:
    """A shared-link mapping request: for `user_id`, point `shared_id` at `target`."""

    org_id: str
    shared_id: str
    user_id: str
    target: str  # "user_scheduling_link_id" or "url"
    value: str


def parse_mapping(body: Mapping[str, Any]) -> MappingRequest:
    """A validated mapping request; SandboxError 400 with field errors otherwise."""
    errors = _required_ids(body)
    targets = [k for k in ("user_scheduling_link_id", "url") if body.get(k) is not None]
    if len(targets) != 1:
        errors["user_scheduling_link_id"] = "Give exactly one of user_scheduling_link_id or url."
    elif not isinstance(body[targets[0]], str) or not body[targets[0]]:
        errors[targets[0]] = "Must be a non-empty string."
    elif targets == ["url"]:
        problem = url_problem(body["url"])
        if problem:
            errors["url"] = problem
    if errors:
        raise validation_error(errors)
    return MappingRequest(
        body["organization_id"],
        body["shared_scheduling_link_id"],
        body["user_id"],
        targets[0],
        body[targets[0]],
    )


def parse_unmapping(body: Mapping[str, Any]) -> tuple[str, str, str]:
    errors = _required_ids(body)
    if errors:
        raise validation_error(errors)
    return body["organization_id"], body["shared_scheduling_link_id"], body["user_id"]


def _required_ids(body: Mapping[str, Any]) -> dict[str, str]:
    return {k: REQUIRED for k in MAPPING_KEYS if not isinstance(body.get(k), str) or not body[k]}


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _new_id() -> str:
    return "schlnk_" + secrets.token_hex(10)


class LinkStore:
    def __init__(self) -> None:
        self._links: dict[str, Link] = {}
        self._by_owner: dict[tuple[str, str], dict[str, None]] = {}  # ids, oldest first
        self._integration: dict[tuple[str, str, str, str], str] = {}
        self._shared: dict[str, Link] = {}
        self._mappings: dict[tuple[str, str, str], dict[str, Any]] = {}

    # User links --------------------------------------------------------------------------

    def upsert_integration(
        self, user_id: str, org_id: str, client_id: str, fields: Mapping[str, Any]
    ) -> Link:
        """Create or update the app's link with `source_id` (validated fields), keyed by
        (user, org, OAuth app, source_id): the same source_id again updates the same link."""
        source_id = str(fields["source_id"])
        values = {k: fields[k] for k in INTEGRATION_FIELDS if k in fields}
        key = (user_id, org_id, client_id, source_id)
        link = self._links.get(self._integration.get(key, ""))
        if link is not None:
            link.update(values, date_updated=_now_iso())
        else:
            link = self._new(
                user_id,
                org_id,
                source="THIRD_PARTY",
                source_id=source_id,
                oauth_client_id=client_id,
                **values,
            )
            self._integration[key] = link["id"]
        return dict(link)

    def delete_integration(self, user_id: str, org_id: str, client_id: str, source_id: str) -> None:
        link_id = self._integration.get((user_id, org_id, client_id, source_id))
        if link_id is None:
            raise not_found()
        self.delete(link_id)

    def owned(self, user_id: str, org_id: str, skip: int, limit: int) -> tuple[list[Link], bool]:
        """A page of a user's links in an org, all sources, oldest first; and whether more
        follow."""
        ids = self._by_owner.get((user_id, org_id), {})
        page = [dict(self._links[i]) for i in itertools.islice(ids, skip, skip + limit)]
        return page, skip + limit < len(ids)

    def get_owned(self, user_id: str, org_id: str, link_id: str) -> Link:
        return dict(self._owned(user_id, org_id, link_id))

    def create_manual(self, user_id: str, org_id: str, fields: Mapping[str, Any]) -> Link:
        values = {k: fields[k] for k in MANUAL_FIELDS if k in fields}
        return dict(self._new(user_id, org_id, **values))

    def update_manual(
        self, user_id: str, org_id: str, link_id: str, fields: Mapping[str, Any]
    ) -> Link:
        link = self._editable(user_id, org_id, link_id)
        link.update({k: fields[k] for k in MANUAL_FIELDS if k in fields}, date_updated=_now_iso())
        return dict(link)

    def delete_manual(self, user_id: str, org_id: str, link_id: str) -> None:
        self.delete(self._editable(user_id, org_id, link_id)["id"])

    def add(self, user_id: str, org_id: str, **values: Any) -> Link:
        """Any user link, as a human would make it in Close (MANUAL unless `source` says)."""
        return dict(self._new(user_id, org_id, **values))

    def delete(self, link_id: str) -> bool:
        """Remove a user link of any source, and the mappings that pointed at it."""
        link = self._links.pop(link_id, None)
        if link is None:
            return False
        self._by_owner.get((link["user_id"], link["organization_id"]), {}).pop(link_id, None)
        if link["source"] == "THIRD_PARTY":
            key = _integration_key(link)
            if self._integration.get(key) == link_id:
                del self._integration[key]
        for stale in [
            k for k, m in self._mappings.items() if m.get("user_scheduling_link_id") == link_id
        ]:
            del self._mappings[stale]
        return True

    def user_links(self, user_id: str | None = None, org_id: str | None = None) -> list[Link]:
        return [
            dict(link)
            for link in self._links.values()
            if (user_id is None or link["user_id"] == user_id)
            and (org_id is None or link["organization_id"] == org_id)
        ]

    def owner_of(self, link_id: str) -> tuple[str, str] | None:
        """(user_id, org_id) of a user link."""
        link = self._links.get(link_id)
        return (link["user_id"], link["organization_id"]) if link else None

    def _new(self, user_id: str, org_id: str, **values: Any) -> Link:
        now = _now_iso()
        link: Link = {
            "id": _new_id(),
            "type": "USER",
            "source": "MANUAL",
            "source_id": None,
            "source_type": None,
            "name": None,
            "url": None,
            "description": None,
            "duration_in_minutes": None,
            "user_id": user_id,
            "organization_id": org_id,
            "oauth_client_id": None,
            "date_created": now,
            "date_updated": now,
        }
        link.update(values)
        self._keep(link)
        return link

    def _keep(self, link: Link) -> None:
        self._links[link["id"]] = link
        self._by_owner.setdefault((link["user_id"], link["organization_id"]), {})[link["id"]] = None

    def _owned(self, user_id: str, org_id: str, link_id: str) -> Link:
        link = self._links.get(link_id)
        if link is None or (link["user_id"], link["organization_id"]) != (user_id, org_id):
            raise not_found()
        return link

    def _editable(self, user_id: str, org_id: str, link_id: str) -> Link:
        link = self._owned(user_id, org_id, link_id)
        if link["source"] != "MANUAL":
            raise SandboxError(
                400,
                f"This is a {link['source']} link: it is managed by the integration that "
                "created it (/scheduling_link/integration/), not through this endpoint.",
            )
        return link

    # Shared links and their mappings -----------------------------------------------------

    def shared_links(self, org_id: str | None = None) -> list[Link]:
        return [
            dict(s)
            for s in self._shared.values()
            if org_id is None or s["organization_id"] == org_id
        ]

    def get_shared(self, org_id: str, shared_id: str) -> Link:
        return dict(self._shared_in(org_id, shared_id))

    def create_shared(self, org_id: str, fields: Mapping[str, Any]) -> Link:
        _check_shared(fields, partial=False)
        now = _now_iso()
        shared: Link = {
            "id": _new_id(),
            "type": "SHARED",
            "name": fields["name"],
            "description": fields.get("description"),
            "template_tag": template_tag(fields["name"]),
            "organization_id": org_id,
            "date_created": now,
            "date_updated": now,
        }
        self._shared[shared["id"]] = shared
        return dict(shared)

    def update_shared(self, org_id: str, shared_id: str, fields: Mapping[str, Any]) -> Link:
        shared = self._shared_in(org_id, shared_id)
        _check_shared(fields, partial=True)
        if "name" in fields:
            shared.update(name=fields["name"], template_tag=template_tag(fields["name"]))
        if "description" in fields:
            shared["description"] = fields["description"]
        shared["date_updated"] = _now_iso()
        return dict(shared)

    def delete_shared(self, org_id: str, shared_id: str) -> None:
        self._shared_in(org_id, shared_id)
        del self._shared[shared_id]
        for stale in [k for k in self._mappings if k[1] == shared_id]:
            del self._mappings[stale]

    def map(self, request: MappingRequest) -> dict[str, Any]:
        """Store a mapping (the caller checked org, membership and permission)."""
        self._shared_in(request.org_id, request.shared_id)
        if request.target == "user_scheduling_link_id" and self.owner_of(request.value) != (
            request.user_id,
            request.org_id,
        ):
            raise validation_error(
                {"user_scheduling_link_id": "Not a link of that user in this organization."}
            )
        mapping = {
            "organization_id": request.org_id,
            "shared_scheduling_link_id": request.shared_id,
            "user_id": request.user_id,
            request.target: request.value,
        }
        self._mappings[_mapping_key(mapping)] = mapping
        return dict(mapping)

    def unmap(self, key: tuple[str, str, str]) -> None:
        if self._mappings.pop(key, None) is None:
            raise not_found()

    def unmap_user(self, org_id: str, user_id: str) -> int:
        """Remove every mapping of a user in an org (they left it). Returns how many."""
        stale = [k for k in self._mappings if k[0] == org_id and k[2] == user_id]
        for key in stale:
            del self._mappings[key]
        return len(stale)

    def mapping(self, key: tuple[str, str, str]) -> dict[str, Any] | None:
        """The mapping of (org, shared link, user), if there is one."""
        found = self._mappings.get(key)
        return dict(found) if found is not None else None

    def mappings(self, org_id: str | None = None) -> list[dict[str, Any]]:
        return [dict(m) for k, m in self._mappings.items() if org_id is None or k[0] == org_id]

    # Persistence -------------------------------------------------------------------------

    def to_data(self) -> dict[str, Any]:
        return {
            "links": [dict(link) for link in self._links.values()],  # oldest first
            "shared": [dict(s) for s in self._shared.values()],
            "mappings": self.mappings(),
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> LinkStore:
        store = cls()
        for link in data["links"]:
            store._keep(dict(link))
            if link["source"] == "THIRD_PARTY":
                store._integration[_integration_key(link)] = link["id"]
        store._shared = {s["id"]: dict(s) for s in data["shared"]}
        store._mappings = {_mapping_key(m): dict(m) for m in data["mappings"]}
        return store

    def _shared_in(self, org_id: str, shared_id: str) -> Link:
        shared = self._shared.get(shared_id)
        if shared is None or shared["organization_id"] != org_id:
            raise not_found()
        return shared


def _integration_key(link: Mapping[str, Any]) -> tuple[str, str, str, str]:
    return (link["user_id"], link["organization_id"], link["oauth_client_id"], link["source_id"])


def _mapping_key(mapping: Mapping[str, Any]) -> tuple[str, str, str]:
    return (mapping["organization_id"], mapping["shared_scheduling_link_id"], mapping["user_id"])


def _check_shared(fields: Mapping[str, Any], *, partial: bool) -> None:
    errors = link_errors(fields, required=("name",), optional=("description",), partial=partial)
    if errors:
        raise validation_error(errors)
