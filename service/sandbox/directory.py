"""Close's people: organizations, users and their memberships, and what each membership may do.

A user may belong to several organizations; a membership (one per user and org) carries the
role and the permissions granted there, so a user can be an admin in one org and not in another
(close-api.md: permissions are read from `/me/`'s `memberships`, not from the user). Close's
views of them live here too: `/me/`, `/user/` and `/organization/{id}/`.

Not thread-safe on its own: `SandboxState` calls it under its lock, and it hands out copies or
JSON-able dicts, never a live object.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

MANAGE_CUSTOMIZATIONS = "manage_customizations"
ADMIN_ROLE = "admin"
USER_ROLE = "user"

# (id, first name, last name, email, {org id: permissions granted there})
SEED_ORGS = (("orga_acme", "Acme Inc."), ("orga_globex", "Globex Corp."))
SEED_USERS: tuple[tuple[str, str, str, str, dict[str, list[str]]], ...] = (
    (
        "user_jane",
        "Jane",
        "Doe",
        "jane@acme.com",
        {"orga_acme": [MANAGE_CUSTOMIZATIONS], "orga_globex": [MANAGE_CUSTOMIZATIONS]},
    ),
    ("user_john", "John", "Smith", "john@acme.com", {"orga_acme": []}),
    ("user_bob", "Bob", "Brown", "bob@acme.com", {"orga_acme": []}),
    ("user_carol", "Carol", "White", "carol@acme.com", {"orga_acme": []}),
    ("user_dave", "Dave", "Green", "dave@acme.com", {"orga_acme": []}),
    ("user_erin", "Erin", "Black", "erin@acme.com", {"orga_acme": []}),
    ("user_ann", "Ann", "Lee", "ann@globex.com", {"orga_globex": []}),
)


class UnknownError(LookupError):
    """An unknown user, organization or membership (the control surface answers 404)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "not found"


@dataclass
class Org:
    id: str
    name: str

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name}


@dataclass
class Membership:
    id: str
    organization_id: str
    user_id: str
    role_id: str
    permissions_granted: list[str]

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "organization_id": self.organization_id,
            "user_id": self.user_id,
            "role_id": self.role_id,
            "permissions_granted": list(self.permissions_granted),
        }


@dataclass
class User:
    id: str
    first_name: str
    last_name: str
    email: str
    memberships: dict[str, Membership] = field(default_factory=dict)  # by org id, join order

    @property
    def organizations(self) -> list[str]:
        return list(self.memberships)

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "email": self.email,
        }


def membership_id(user_id: str, org_id: str) -> str:
    """Stable across resets and restarts, unique per (user, org): "mem_" and 20 hex digits."""
    return "mem_" + hashlib.sha256(f"{user_id}\0{org_id}".encode()).hexdigest()[:20]


def parse_permissions(value: Any) -> list[str]:
    """A list of permission names (non-empty strings, duplicates dropped); ValueError otherwise."""
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ValueError("permissions_granted must be a list of permission names")
    names = list(value)
    if not all(isinstance(p, str) and p for p in names):
        raise ValueError("permissions_granted must be a list of non-empty strings")
    return list(dict.fromkeys(names))


class Directory:
    def __init__(self) -> None:
        self.orgs: dict[str, Org] = {}
        self.users: dict[str, User] = {}

    @classmethod
    def seeded(cls) -> Directory:
        """Acme Inc. (Jane Doe, admin with Manage Customizations, and five users without it) and
        Globex Corp. (Jane again, admin, and Ann)."""
        directory = cls()
        for org_id, name in SEED_ORGS:
            directory.add_org(org_id, name)
        for user_id, first, last, email, grants in SEED_USERS:
            directory.add_user(user_id, first, last, email, list(grants))
            for org_id, permissions in grants.items():
                directory.set_permissions(user_id, org_id, permissions)
        return directory

    # Changes -----------------------------------------------------------------------------

    def add_org(self, org_id: str, name: str) -> None:
        if not org_id:
            raise ValueError("an organization needs an id")
        self.orgs[org_id] = Org(org_id, name)

    def add_user(
        self,
        user_id: str,
        first_name: str,
        last_name: str,
        email: str,
        org_ids: Iterable[str],
        permissions: Iterable[str] = (),
    ) -> None:
        """Add or replace a user, a member of `org_ids` with `permissions` in each (admin role
        with Manage Customizations, user role without); unknown orgs are created, named by id.
        Emails are unique, case-insensitively, as in Close."""
        if not user_id:
            raise ValueError("a user needs an id")
        clash = self.user_by_email(email)
        if clash is not None and clash.id != user_id:
            raise ValueError(f"{email!r} is already the email of {clash.id}")
        granted = parse_permissions(permissions)
        user = User(user_id, first_name, last_name, email)
        for org_id in dict.fromkeys(org_ids):
            if org_id not in self.orgs:
                self.add_org(org_id, org_id)
            user.memberships[org_id] = _membership(user_id, org_id, granted)
        self.users[user_id] = user

    def remove_member(self, user_id: str, org_id: str | None = None) -> list[str]:
        """Take a user out of one org, or out of Close altogether (`org_id` None). Returns the
        orgs they left."""
        user = self.user(user_id)
        if org_id is None:
            del self.users[user_id]
            return user.organizations
        self.membership(user_id, org_id)
        del user.memberships[org_id]
        return [org_id]

    def set_permissions(self, user_id: str, org_id: str, permissions: Iterable[str]) -> Membership:
        """Replace what a user may do in one org (the role follows Manage Customizations)."""
        granted = parse_permissions(permissions)
        membership = self.membership(user_id, org_id)
        membership.permissions_granted = granted
        membership.role_id = _role(granted)
        return copy.deepcopy(membership)

    # Lookups -----------------------------------------------------------------------------

    def user(self, user_id: str) -> User:
        user = self.users.get(user_id)
        if user is None:
            raise UnknownError(f"unknown user {user_id!r}")
        return user

    def org(self, org_id: str) -> Org:
        org = self.orgs.get(org_id)
        if org is None:
            raise UnknownError(f"unknown organization {org_id!r}")
        return org

    def membership(self, user_id: str, org_id: str) -> Membership:
        membership = self.user(user_id).memberships.get(org_id)
        if membership is None or org_id not in self.orgs:
            raise UnknownError(f"{user_id} is not a member of {org_id!r}")
        return membership

    def is_member(self, user_id: str, org_id: str) -> bool:
        user = self.users.get(user_id)
        return user is not None and org_id in user.memberships and org_id in self.orgs

    def may(self, user_id: str, org_id: str, permission: str) -> bool:
        """Whether the user's membership in the org grants `permission`."""
        if not self.is_member(user_id, org_id):
            return False
        return permission in self.users[user_id].memberships[org_id].permissions_granted

    def user_by_email(self, email: str) -> User | None:
        wanted = email.strip().casefold()
        return next((u for u in self.users.values() if u.email.casefold() == wanted), None)

    def members(self, org_id: str) -> list[User]:
        """The org's users, in the order they were added."""
        return [u for u in self.users.values() if org_id in u.memberships]

    # Close's views -----------------------------------------------------------------------

    def me(self, user_id: str) -> dict[str, Any]:
        """`GET /me/`: the user, the full objects of their orgs and one membership per org; no
        top-level organization_id (the token response says which org a token is for)."""
        user = self.user(user_id)
        orgs = [o for o in user.organizations if o in self.orgs]
        return {
            **user.public(),
            "organizations": [self.orgs[o].public() for o in orgs],
            "memberships": [user.memberships[o].public() for o in orgs],
        }

    def user_listing(self, org_id: str) -> list[dict[str, Any]]:
        """`GET /user/`: the org's users, each with the ids of all their orgs."""
        return [
            {**u.public(), "organizations": [o for o in u.organizations if o in self.orgs]}
            for u in self.members(org_id)
        ]

    def organization(self, org_id: str) -> dict[str, Any]:
        """`GET /organization/{id}/`: the org with its memberships, each naming its user."""
        org = self.org(org_id)
        return {
            **org.public(),
            "memberships": [self.member_view(u, org_id) for u in self.members(org_id)],
        }

    def member_view(self, user: User, org_id: str) -> dict[str, Any]:
        return {
            **user.memberships[org_id].public(),
            "user_email": user.email,
            "user_full_name": user.full_name,
        }

    # Persistence -------------------------------------------------------------------------

    def to_data(self) -> dict[str, Any]:
        return {
            "orgs": [o.public() for o in self.orgs.values()],
            "users": [
                {**u.public(), "memberships": [m.public() for m in u.memberships.values()]}
                for u in self.users.values()
            ],
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Directory:
        directory = cls()
        for org in data["orgs"]:
            directory.add_org(org["id"], org["name"])
        for raw in data["users"]:
            user = User(raw["id"], raw["first_name"], raw["last_name"], raw["email"])
            for m in raw["memberships"]:
                user.memberships[m["organization_id"]] = Membership(
                    m["id"],
                    m["organization_id"],
                    user.id,
                    m["role_id"],
                    list(m["permissions_granted"]),
                )
            directory.users[user.id] = user
        return directory


def _membership(user_id: str, org_id: str, permissions: list[str]) -> Membership:
    return Membership(
        membership_id(user_id, org_id), org_id, user_id, _role(permissions), list(permissions)
    )


def _role(permissions: list[str]) -> str:
    return ADMIN_ROLE if MANAGE_CUSTOMIZATIONS in permissions else USER_ROLE
