"""Teams, as pure functions: which event types belong to which connection, and the plan for
the Close shared links of managed event types (contract: product.md, "Teams").

- A member connection carries its member's personal event types (`owner_id`) and the managed
  types they are assigned (source_id `<event type id>:<member id>`, url = the assignment's).
- The admin connection carries the account-level types (no `owner_id`, not managed) and, when
  the admin's Close email matches a member's, that member's types too.
- Each active managed type is one shared link of ours; each assigned member whose email
  matches a Close user of the org is mapped, to their own link when they have one in Close,
  otherwise to the assignment url. Only shared links and mappings we recorded are ever
  changed or removed; deletes and unmaps only follow complete listings.

Property-tested with Hypothesis (tests/sync/test_team_properties.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from service.sync.mapping import MAX_DESCRIPTION, MAX_NAME, content_hash, source_id_of

TEAM_FIELDS = ("owner_id", "managed", "assignments")


# Who carries what --------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    member_id: str | None  # the member whose personal and assigned types this connection syncs
    account_level: bool  # the admin connection: also the account-level types


def normalize_email(value: object) -> str | None:
    """Emails compare case-insensitively and trimmed; anything else matches nothing."""
    if not isinstance(value, str) or "@" not in value:
        return None
    return value.strip().casefold() or None


def member_id_of(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        return None
    return str(value)


def admin_scope(admin_email: str | None, members: Mapping[str, str | None]) -> Scope:
    """The admin connection's scope: account-level types, plus the member it is (by email)."""
    wanted = normalize_email(admin_email)
    match = None
    if wanted is not None:
        match = next(
            (mid for mid, email in sorted(members.items()) if normalize_email(email) == wanted),
            None,
        )
    return Scope(member_id=match, account_level=True)


def member_scope(member_id: str) -> Scope:
    return Scope(member_id=member_id, account_level=False)


def is_managed(item: Mapping[str, Any]) -> bool:
    return item.get("managed") is True


def assignments(item: Mapping[str, Any]) -> dict[str, object]:
    """A managed type's assignments, member id → url (the first of duplicates kept)."""
    found: dict[str, object] = {}
    raw = item.get("assignments")
    if not isinstance(raw, list):
        return found
    for entry in raw:
        if isinstance(entry, dict):
            member = member_id_of(entry.get("member_id"))
            if member is not None and member not in found:
                found[member] = entry.get("url")
    return found


def expand(item: Mapping[str, Any], scope: Scope) -> list[dict[str, Any]]:
    """The event types (as source items, final ids) that this connection carries for one
    listed item: none, the item itself, or the member's assignment of a managed type."""
    if is_managed(item):
        if scope.member_id is None or scope.member_id not in assignments(item):
            return []
        plain = {k: v for k, v in item.items() if k not in TEAM_FIELDS}
        plain["id"] = f"{source_id_of(item)}:{scope.member_id}"
        plain["url"] = assignments(item)[scope.member_id]
        return [plain]
    owner = member_id_of(item.get("owner_id"))
    if owner is not None:
        return [dict(item)] if owner == scope.member_id else []
    return [dict(item)] if scope.account_level else []


def assignment_source_id(event_type_id: str, member_id: str) -> str:
    return f"{event_type_id}:{member_id}"


# Shared links ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DesiredShared:
    event_type_id: str
    fields: dict[str, Any]  # the body of POST/PUT /shared_scheduling_link/
    content_hash: str


USER_LINK_TARGET = "user_scheduling_link_id"
URL_TARGET = "url"


@dataclass(frozen=True)
class DesiredMapping:
    event_type_id: str
    close_user_id: str
    member_id: str
    target_kind: str  # "user_scheduling_link_id" or "url"
    target_value: str
    content_hash: str


def shared_fields(item: Mapping[str, Any]) -> dict[str, Any] | None:
    """Name and description of a managed type's shared link; None when unusable."""
    name = item.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
        return None
    fields: dict[str, Any] = {"name": name.strip()}
    description = item.get("description")
    if isinstance(description, str) and description.strip():
        fields["description"] = description[:MAX_DESCRIPTION]
    return fields


def desired_shared(
    managed: Iterable[Mapping[str, Any]],
    members: Mapping[str, str | None],
    org_users: Mapping[str, str],
    user_links: Mapping[str, str],
) -> tuple[list[DesiredShared], list[DesiredMapping]]:
    """Shared links and mappings wanted for the active managed types.

    `members`: member id → email; `org_users`: normalized email → Close user id;
    `user_links`: `<event type id>:<member id>` → the Close id of that member's own link
    (present only when the member's connection holds it in Close)."""
    shared: list[DesiredShared] = []
    mappings: list[DesiredMapping] = []
    for item in managed:
        et_id = source_id_of(item)
        fields = shared_fields(item)
        if et_id is None or fields is None:
            continue
        shared.append(DesiredShared(et_id, fields, content_hash(fields)))
        taken: set[str] = set()
        for member, url in sorted(assignments(item).items()):
            email = normalize_email(members.get(member))
            user_id = org_users.get(email) if email else None
            if user_id is None or user_id in taken:
                continue  # not in the Close org (or a second member with the same Close user)
            link_id = user_links.get(assignment_source_id(et_id, member))
            if link_id:
                kind, value = USER_LINK_TARGET, link_id
            elif isinstance(url, str) and url.startswith(("http://", "https://")):
                kind, value = URL_TARGET, url
            else:
                continue
            taken.add(user_id)
            target = {"user_id": user_id, "kind": kind, "value": value}
            mappings.append(
                DesiredMapping(et_id, user_id, member, kind, value, content_hash(target))
            )
    return shared, mappings


@dataclass
class SharedPlan:
    create: list[DesiredShared] = field(default_factory=list)
    update: list[DesiredShared] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)  # event type ids of our shared links
    map: list[DesiredMapping] = field(default_factory=list)
    unmap: list[tuple[str, str]] = field(default_factory=list)  # (event type id, user id)
    withheld: int = 0

    @property
    def writes(self) -> int:
        return (
            len(self.create) + len(self.update) + len(self.delete) + len(self.map) + len(self.unmap)
        )


def plan_shared(
    shared: list[DesiredShared],
    mappings: list[DesiredMapping],
    known_shared: Mapping[str, str | None],
    known_mappings: Mapping[tuple[str, str], str],
    *,
    complete: bool,
) -> SharedPlan:
    """The minimal writes from what we recorded to what is wanted.

    `known_shared`: event type id → hash of what Close accepted, for shared links we created
    (None: not yet created, or its creation not confirmed); `known_mappings`: (event type id,
    Close user id) → hash of the mapping we made. Nothing else is ever touched."""
    result = SharedPlan()
    wanted = {s.event_type_id for s in shared}
    for item in shared:
        if item.event_type_id not in known_shared or known_shared[item.event_type_id] is None:
            result.create.append(item)
        elif known_shared[item.event_type_id] != item.content_hash:
            result.update.append(item)
    created = {s.event_type_id for s in result.create}
    wanted_maps = {(m.event_type_id, m.close_user_id) for m in mappings}
    for mapping in mappings:
        key = (mapping.event_type_id, mapping.close_user_id)
        # A shared link made anew has no mappings yet, whatever we recorded before.
        if mapping.event_type_id in created or known_mappings.get(key) != mapping.content_hash:
            result.map.append(mapping)
    for key in known_mappings:
        if key in wanted_maps or key[0] not in known_shared or key[0] in created:
            continue
        if key[0] not in wanted:
            continue  # the shared link itself goes (and its mappings with it), or is withheld
        if complete:
            result.unmap.append(key)
        else:
            result.withheld += 1
    for et_id in known_shared:
        if et_id in wanted:
            continue
        if complete:
            result.delete.append(et_id)
        else:
            result.withheld += 1
    return result
