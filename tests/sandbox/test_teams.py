"""Teams in the Close sandbox: several users per org, permissions per membership, Close's views of
users and orgs, who may touch shared links and their mappings, and the control surface that
changes the team under a running service."""

from __future__ import annotations

from typing import Any

import pytest

from service.sandbox.directory import UnknownError
from tests.sandbox.harness import REDIRECT, Sandbox

ACME_USERS = ["user_jane", "user_john", "user_bob", "user_carol", "user_dave", "user_erin"]
MAPPING = "/shared_scheduling_link_association/"
UNMAP = f"{MAPPING}unmap/"


def link_body(source_id: str = "evt-1") -> dict[str, Any]:
    return {"source_id": source_id, "name": "Demo", "url": f"https://b.example/{source_id}"}


def shared_link(sandbox: Sandbox, name: str = "Team demo") -> dict[str, Any]:
    admin = sandbox.issue()["access_token"]
    created = sandbox.api("POST", "/shared_scheduling_link/", admin, json={"name": name})
    assert created.status_code == 200
    shared: dict[str, Any] = created.json()
    return shared


def own_link(sandbox: Sandbox, access: str, source_id: str = "evt-1") -> str:
    created = sandbox.api(
        "POST", "/scheduling_link/integration/", access, json=link_body(source_id)
    )
    assert created.status_code == 200
    link_id: str = created.json()["id"]
    return link_id


def mapping_key(shared_id: str, user_id: str) -> dict[str, str]:
    return {
        "organization_id": "orga_acme",
        "shared_scheduling_link_id": shared_id,
        "user_id": user_id,
    }


# Identity: /me/, /user/, /organization/{id}/ ------------------------------------------------


def test_me_has_organizations_and_one_membership_per_org(sandbox: Sandbox) -> None:
    jane = sandbox.api("GET", "/me/", sandbox.issue()["access_token"]).json()
    assert set(jane) == {"id", "first_name", "last_name", "email", "organizations", "memberships"}
    assert [o["id"] for o in jane["organizations"]] == ["orga_acme", "orga_globex"]
    assert jane["organizations"][0] == {"id": "orga_acme", "name": "Acme Inc."}
    acme, globex = jane["memberships"]
    assert set(acme) == {"id", "organization_id", "user_id", "role_id", "permissions_granted"}
    assert (acme["organization_id"], acme["user_id"], acme["role_id"]) == (
        "orga_acme",
        "user_jane",
        "admin",
    )
    assert acme["permissions_granted"] == ["manage_customizations"]
    assert acme["id"].startswith("mem_") and acme["id"] != globex["id"]
    # The same answer whichever org the token is for: /me/ is about the user.
    assert sandbox.api("GET", "/me/", sandbox.issue(org="orga_globex")["access_token"]).json() == (
        jane
    )
    bob = sandbox.api("GET", "/me/", sandbox.issue("user_bob")["access_token"]).json()
    assert (bob["email"], bob["organizations"]) == (
        "bob@acme.com",
        [{"id": "orga_acme", "name": "Acme Inc."}],
    )
    assert [(m["role_id"], m["permissions_granted"]) for m in bob["memberships"]] == [("user", [])]


def test_organization_lists_its_memberships_with_emails(sandbox: Sandbox) -> None:
    carol = sandbox.issue("user_carol")["access_token"]
    org = sandbox.api("GET", "/organization/orga_acme/", carol).json()
    assert (org["id"], org["name"]) == ("orga_acme", "Acme Inc.")
    assert [m["user_id"] for m in org["memberships"]] == ACME_USERS
    jane = org["memberships"][0]
    assert set(jane) == {
        "id",
        "organization_id",
        "user_id",
        "user_email",
        "user_full_name",
        "role_id",
        "permissions_granted",
    }
    assert (jane["user_email"], jane["user_full_name"], jane["permissions_granted"]) == (
        "jane@acme.com",
        "Jane Doe",
        ["manage_customizations"],
    )
    assert {m["user_email"]: m["permissions_granted"] for m in org["memberships"][1:]} == {
        f"{name}@acme.com": [] for name in ("john", "bob", "carol", "dave", "erin")
    }
    me = sandbox.api("GET", "/me/", carol).json()
    assert me["memberships"][0]["id"] == org["memberships"][3]["id"]
    # A token is for one org: any other is not found, even one its user also belongs to.
    assert sandbox.api("GET", "/organization/orga_globex/", carol).status_code == 404
    jane_acme = sandbox.issue()["access_token"]
    assert sandbox.api("GET", "/organization/orga_globex/", jane_acme).status_code == 404
    assert sandbox.api("GET", "/organization/orga_nope/", jane_acme).status_code == 404
    assert sandbox.state.calls["GET /organization/{org_id}/"] == 4


def test_permissions_are_per_membership_and_apply_to_live_tokens(sandbox: Sandbox) -> None:
    jane_acme, jane_globex = sandbox.issue()["access_token"], sandbox.issue(org="orga_globex")
    john = sandbox.issue("user_john")["access_token"]
    assert sandbox.api("GET", "/shared_scheduling_link/", john).status_code == 403
    membership = sandbox.state.set_permissions("user_john", "orga_acme", ["manage_customizations"])
    assert (membership.role_id, membership.permissions_granted) == (
        "admin",
        ["manage_customizations"],
    )
    assert sandbox.api("GET", "/shared_scheduling_link/", john).status_code == 200
    # Jane loses it in Acme only, over HTTP.
    answer = sandbox.control(
        "POST",
        "users/user_jane/permissions",
        json={"organization_id": "orga_acme", "permissions_granted": []},
    )
    assert answer.status_code == 200
    assert (answer.json()["role_id"], answer.json()["permissions_granted"]) == ("user", [])
    denied = sandbox.api("POST", "/shared_scheduling_link/", jane_acme, json={"name": "x"})
    assert denied.status_code == 403 and "Manage Customizations" in denied.json()["error"]
    globex = sandbox.api(
        "POST", "/shared_scheduling_link/", jane_globex["access_token"], json={"name": "x"}
    )
    assert globex.status_code == 200
    memberships = sandbox.api("GET", "/me/", jane_acme).json()["memberships"]
    assert [m["permissions_granted"] for m in memberships] == [[], ["manage_customizations"]]


def test_bad_permission_changes_are_refused(sandbox: Sandbox) -> None:
    for path, body, status in (
        ("users/user_ann/permissions", {"organization_id": "orga_acme"}, 400),
        (
            "users/user_ann/permissions",
            {"organization_id": "orga_acme", "permissions_granted": []},
            404,
        ),
        (
            "users/nobody/permissions",
            {"organization_id": "orga_acme", "permissions_granted": []},
            404,
        ),
        (
            "users/user_bob/permissions",
            {"organization_id": "orga_acme", "permissions_granted": "manage_customizations"},
            400,
        ),
        (
            "users/user_bob/permissions",
            {"organization_id": "orga_acme", "permissions_granted": [""]},
            400,
        ),
    ):
        answer = sandbox.control("POST", path, json=body)
        assert answer.status_code == status, body
        assert answer.json()["error"]
    with pytest.raises(UnknownError, match="not a member"):
        sandbox.state.set_permissions("user_ann", "orga_acme", [])


# Shared links and mappings: who may --------------------------------------------------------


def test_without_manage_customizations_every_shared_link_call_is_403(sandbox: Sandbox) -> None:
    shared = shared_link(sandbox)
    bob = sandbox.issue("user_bob")["access_token"]
    path = f"/shared_scheduling_link/{shared['id']}/"
    for method, url, body in (
        ("GET", "/shared_scheduling_link/", None),
        ("POST", "/shared_scheduling_link/", {"name": "Mine"}),
        ("GET", path, None),
        ("PUT", path, {"name": "Renamed"}),
        ("DELETE", path, None),
        ("GET", "/shared_scheduling_link/schlnk_missing/", None),  # 403 first: learns nothing
        ("POST", MAPPING, {**mapping_key(shared["id"], "user_bob"), "url": "https://b.example"}),
        ("POST", UNMAP, mapping_key(shared["id"], "user_bob")),
    ):
        answer = sandbox.api(method, url, bob, json=body)
        assert answer.status_code == 403, (method, url)
        assert answer.json()["error"] == "You need the Manage Customizations permission."
    assert [s["name"] for s in sandbox.state.shared_links()] == ["Team demo"]
    assert sandbox.state.associations() == []


def test_a_member_may_map_a_shared_link_to_their_own_link_only(sandbox: Sandbox) -> None:
    shared = shared_link(sandbox)
    bob, carol = sandbox.issue("user_bob")["access_token"], sandbox.issue("user_carol")
    bobs, carols = own_link(sandbox, bob), own_link(sandbox, carol["access_token"])
    for_bob = mapping_key(shared["id"], "user_bob")
    for_carol = mapping_key(shared["id"], "user_carol")
    for body in (
        {**for_bob, "user_scheduling_link_id": carols},  # someone else's link, for himself
        {**for_carol, "user_scheduling_link_id": carols},  # for someone else
        {**for_carol, "user_scheduling_link_id": bobs},
        {**for_bob, "url": "https://b.example/bob"},  # a URL is an admin's call
    ):
        assert sandbox.api("POST", MAPPING, bob, json=body).status_code == 403, body
    mapped = sandbox.api("POST", MAPPING, bob, json={**for_bob, "user_scheduling_link_id": bobs})
    assert mapped.status_code == 200
    assert mapped.json() == {**for_bob, "user_scheduling_link_id": bobs}
    # He may undo his own mapping; not one an admin made to a URL.
    assert sandbox.api("POST", UNMAP, bob, json=for_bob).status_code == 200
    admin = sandbox.issue()["access_token"]
    to_url = {**for_bob, "url": "https://b.example/bob"}
    assert sandbox.api("POST", MAPPING, admin, json=to_url).status_code == 200
    assert sandbox.api("POST", UNMAP, bob, json=for_bob).status_code == 403
    assert sandbox.state.associations() == [to_url]
    # Pointing it at his own link instead is the owner's right (the admin's URL is replaced).
    own = {**for_bob, "user_scheduling_link_id": bobs}
    assert sandbox.api("POST", MAPPING, bob, json=own).status_code == 200
    assert sandbox.state.associations() == [own]
    assert sandbox.api("POST", UNMAP, admin, json=for_bob).status_code == 200
    assert sandbox.api("POST", UNMAP, admin, json=for_bob).status_code == 404


def test_an_admin_maps_each_member_by_their_own_link_or_a_url(sandbox: Sandbox) -> None:
    shared = shared_link(sandbox)
    admin = sandbox.issue()["access_token"]
    daves = own_link(sandbox, sandbox.issue("user_dave")["access_token"])
    answers = [
        sandbox.api(
            "POST",
            MAPPING,
            admin,
            json={**mapping_key(shared["id"], "user_dave"), "user_scheduling_link_id": daves},
        ),
        sandbox.api(
            "POST",
            MAPPING,
            admin,
            json={**mapping_key(shared["id"], "user_erin"), "url": "https://b.example/erin"},
        ),
        # Erin has no such link: a link must be the mapped user's own.
        sandbox.api(
            "POST",
            MAPPING,
            admin,
            json={**mapping_key(shared["id"], "user_carol"), "user_scheduling_link_id": daves},
        ),
    ]
    assert [a.status_code for a in answers] == [200, 200, 400]
    assert "user_scheduling_link_id" in answers[2].json()["field-errors"]
    team = sandbox.control("GET", "orgs/orga_acme").json()
    (listed,) = team["shared_links"]
    assert listed["id"] == shared["id"] and listed["template_tag"] == "team_demo"
    assert {
        m["user_id"]: m.get("user_scheduling_link_id") or m["url"] for m in listed["associations"]
    } == {
        "user_dave": daves,
        "user_erin": "https://b.example/erin",
    }


# The team under control: inspection, grants, members leaving ---------------------------------


def test_team_inspection_shows_members_grants_links_and_mappings(sandbox: Sandbox) -> None:
    bob = sandbox.issue("user_bob")["access_token"]
    bobs = own_link(sandbox, bob)
    sandbox.issue("user_bob")
    team = sandbox.state.team("orga_acme")
    assert team["organization"] == {"id": "orga_acme", "name": "Acme Inc."}
    assert [m["id"] for m in team["members"]] == ACME_USERS
    by_id = {m["id"]: m for m in team["members"]}
    assert by_id["user_bob"]["email"] == "bob@acme.com"
    assert by_id["user_bob"]["active_grants"] == 2 and by_id["user_carol"]["active_grants"] == 0
    assert [link["id"] for link in by_id["user_bob"]["links"]] == [bobs]
    assert by_id["user_jane"]["membership"]["permissions_granted"] == ["manage_customizations"]
    assert by_id["user_bob"]["membership"]["user_full_name"] == "Bob Brown"
    assert team["shared_links"] == []
    assert sandbox.control("GET", "orgs/orga_acme").json() == team
    assert sandbox.control("GET", "orgs/orga_nope").status_code == 404
    state = sandbox.control("GET", "state").json()
    assert {(m["user_id"], m["organization_id"]) for m in state["memberships"]} >= {
        ("user_jane", "orga_acme"),
        ("user_jane", "orga_globex"),
        ("user_erin", "orga_acme"),
    }
    assert state["users"][0] == {
        "id": "user_jane",
        "first_name": "Jane",
        "last_name": "Doe",
        "email": "jane@acme.com",
        "organizations": ["orga_acme", "orga_globex"],
    }


def test_revoking_one_members_grant_leaves_the_team_alone(sandbox: Sandbox) -> None:
    pairs = {user: sandbox.issue(user) for user in ("user_jane", "user_bob", "user_carol")}
    jane_globex = sandbox.issue(org="orga_globex")
    answer = sandbox.control(
        "POST", "revoke-grant", json={"user_id": "user_bob", "organization_id": "orga_acme"}
    )
    assert answer.json() == {"revoked": 1}
    statuses = {
        u: sandbox.api("GET", "/me/", p["access_token"]).status_code for u, p in pairs.items()
    }
    assert statuses == {"user_jane": 200, "user_bob": 401, "user_carol": 200}
    refreshed = sandbox.token(
        grant_type="refresh_token", refresh_token=pairs["user_bob"]["refresh_token"]
    )
    assert refreshed.json()["error"] == "invalid_grant"
    # Jane's grant in one org only.
    assert sandbox.state.revoke_grant("user_jane", org_id="orga_globex") == 1
    assert sandbox.api("GET", "/me/", jane_globex["access_token"]).status_code == 401
    assert sandbox.api("GET", "/me/", pairs["user_jane"]["access_token"]).status_code == 200


def test_a_member_who_leaves_loses_grants_and_mappings_but_not_links(sandbox: Sandbox) -> None:
    shared = shared_link(sandbox)
    carol = sandbox.issue("user_carol")
    carols = own_link(sandbox, carol["access_token"])
    admin = sandbox.issue()["access_token"]
    mapped = {**mapping_key(shared["id"], "user_carol"), "user_scheduling_link_id": carols}
    assert sandbox.api("POST", MAPPING, admin, json=mapped).status_code == 200
    removed = sandbox.control("DELETE", "users/user_carol", params={"organization_id": "orga_acme"})
    assert removed.json() == {"revoked": 1}
    assert sandbox.api("GET", "/me/", carol["access_token"]).status_code == 401
    gone = sandbox.token(grant_type="refresh_token", refresh_token=carol["refresh_token"])
    assert gone.json()["error"] == "invalid_grant"
    users = sandbox.api("GET", "/user/", admin).json()["data"]
    assert "user_carol" not in {u["id"] for u in users}
    assert sandbox.state.associations() == []
    assert [link["id"] for link in sandbox.state.links(user_id="user_carol")] == [carols]
    mapping_again = sandbox.api("POST", MAPPING, admin, json=mapped)
    assert mapping_again.status_code == 400 and "user_id" in mapping_again.json()["field-errors"]
    with pytest.raises(ValueError, match="not a member"):
        sandbox.state.issue_tokens("linksync-sandbox", "user_carol", "orga_acme")
    # Leaving again, or an unknown user, is a 404; leaving Close altogether removes the user.
    again = sandbox.control("DELETE", "users/user_carol", params={"organization_id": "orga_acme"})
    assert again.status_code == 404
    assert sandbox.control("DELETE", "users/nobody").status_code == 404
    jane_globex = sandbox.issue(org="orga_globex")
    assert sandbox.state.remove_user("user_jane") == 3  # both orgs: the shared link, admin, globex
    assert sandbox.api("GET", "/me/", jane_globex["access_token"]).status_code == 401
    assert "user_jane" not in {u["id"] for u in sandbox.state.snapshot()["users"]}


def test_control_adds_members_with_permissions_and_unique_emails(sandbox: Sandbox) -> None:
    added = sandbox.control(
        "POST",
        "users",
        json={
            "users": [
                {
                    "id": "user_frank",
                    "first_name": "Frank",
                    "last_name": "Lead",
                    "email": "frank@acme.com",
                    "organizations": ["orga_acme"],
                    "permissions_granted": ["manage_customizations"],
                },
                {"id": "user_gina", "email": "gina@acme.com", "organizations": ["orga_acme"]},
            ]
        },
    )
    assert added.status_code == 200
    frank = sandbox.issue("user_frank")["access_token"]
    assert sandbox.api("GET", "/shared_scheduling_link/", frank).status_code == 200
    gina = sandbox.issue("user_gina")["access_token"]
    assert sandbox.api("GET", "/shared_scheduling_link/", gina).status_code == 403
    org = sandbox.api("GET", "/organization/orga_acme/", frank).json()
    assert [m["user_id"] for m in org["memberships"]][-2:] == ["user_frank", "user_gina"]
    taken = sandbox.control(
        "POST",
        "users",
        json={
            "users": [{"id": "user_x", "email": "Jane@Acme.com", "organizations": ["orga_acme"]}]
        },
    )
    assert taken.status_code == 400 and "already the email of user_jane" in taken.json()["error"]
    with pytest.raises(ValueError, match="already the email"):
        sandbox.state.add_user("user_y", "Y", "Y", " bob@acme.com ".strip().upper(), ["orga_acme"])


# Consent: any member may be the one who authorizes --------------------------------------------


def test_another_member_consents_and_gets_their_own_token(sandbox: Sandbox) -> None:
    query = sandbox.authorize(user="user_erin", org="orga_acme")
    tokens = sandbox.token(
        grant_type="authorization_code", code=query["code"][0], redirect_uri=REDIRECT
    ).json()
    assert (tokens["user_id"], tokens["organization_id"]) == ("user_erin", "orga_acme")
    me = sandbox.api("GET", "/me/", tokens["access_token"]).json()
    assert me["email"] == "erin@acme.com"
    refused = sandbox.consent(user="user_erin", org="orga_globex")
    assert refused.status_code == 400 and "Erin Black is not a member" in refused.text
    assert '<option value="user_erin" selected>' in refused.text  # her choice is kept


def test_a_token_dies_with_its_membership_however_it_was_removed(sandbox: Sandbox) -> None:
    acme, globex = sandbox.issue(), sandbox.issue(org="orga_globex")
    # Replacing the user without Acme leaves the grant un-revoked: the token still stops.
    sandbox.state.add_user("user_jane", "Jane", "Doe", "jane@acme.com", ["orga_globex"], True)
    for path in ("/me/", "/scheduling_link/", "/shared_scheduling_link/"):
        answer = sandbox.api("GET", path, acme["access_token"])
        assert answer.status_code == 401 and "not a member" in answer.json()["error"], path
    gone = sandbox.token(grant_type="refresh_token", refresh_token=acme["refresh_token"])
    assert gone.json()["error"] == "invalid_grant"
    assert sandbox.api("GET", "/shared_scheduling_link/", globex["access_token"]).status_code == 200
