"""The Close sandbox enforces what close-api.md says. Every other test trusts it, so these drive
it over real HTTP exactly as a client would, and check what Close would have stored."""

from __future__ import annotations

import http.client
import re
import threading
import time
from typing import Any
from urllib.parse import quote

import pytest
import requests

from tests.sandbox.harness import CLIENT_ID, CLIENT_SECRET, REDIRECT, Sandbox

LINK_KEYS = {
    "id",
    "type",
    "source",
    "source_id",
    "source_type",
    "name",
    "url",
    "description",
    "duration_in_minutes",
    "user_id",
    "organization_id",
    "oauth_client_id",
    "date_created",
    "date_updated",
}


def link_body(source_id: str = "evt-1", **fields: Any) -> dict[str, Any]:
    return {"source_id": source_id, "name": "Intro", "url": "https://b.example/intro", **fields}


def rate_header(response: requests.Response) -> dict[str, float]:
    return {k: float(v) for k, v in re.findall(r"(\w+)=([0-9.]+)", response.headers["RateLimit"])}


# OAuth: consent page and code flow ------------------------------------------------------------


def test_consent_page_offers_users_organizations_and_both_decisions(sandbox: Sandbox) -> None:
    page = sandbox.http.get(
        f"{sandbox.url}/oauth2/authorize/", params=sandbox.authorize_params(), timeout=5
    )
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    html = page.text
    assert "<title>Authorize application · Close (sandbox)</title>" in html
    assert '<select id="user_id" name="user_id">' in html
    options = re.findall(r'<option value="(\w+)" ?(selected)?', html)
    assert options == [
        ("user_jane", "selected"),  # the default: a flow that only clicks Approve is Jane's
        ("user_john", ""),
        ("user_bob", ""),
        ("user_carol", ""),
        ("user_dave", ""),
        ("user_erin", ""),
        ("user_ann", ""),
    ]
    radios = re.findall(r'<input type="radio" name="organization_id" value="(\w+)"', html)
    assert radios == ["orga_acme", "orga_globex"]
    assert '<button type="submit" name="decision" value="approve">Approve</button>' in html
    assert 'name="decision" value="decline"' in html and "<script" not in html
    assert 'method="post"' in html and "http://" not in html.replace(REDIRECT, "")


def test_code_flow_exchange_and_single_use_code(sandbox: Sandbox) -> None:
    query = sandbox.authorize()
    assert query["state"] == ["s-1"] and query["code"][0]
    code = query["code"][0]
    exchanged = sandbox.token(grant_type="authorization_code", code=code, redirect_uri=REDIRECT)
    assert exchanged.status_code == 200 and exchanged.headers["Cache-Control"] == "no-store"
    body = exchanged.json()
    assert set(body) == {
        "token_type",
        "access_token",
        "expires_in",
        "refresh_token",
        "scope",
        "organization_id",
        "user_id",
    }
    assert body["token_type"] == "Bearer" and body["scope"] == "all.full_access offline_access"
    assert (body["user_id"], body["organization_id"], body["expires_in"]) == (
        "user_jane",
        "orga_acme",
        3600,
    )
    me = sandbox.api("GET", "/me/", body["access_token"]).json()
    assert (me["id"], me["first_name"], me["last_name"], me["email"]) == (
        "user_jane",
        "Jane",
        "Doe",
        "jane@acme.com",
    )
    assert me["organizations"] == [
        {"id": "orga_acme", "name": "Acme Inc."},
        {"id": "orga_globex", "name": "Globex Corp."},
    ]
    assert [m["organization_id"] for m in me["memberships"]] == ["orga_acme", "orga_globex"]
    assert "organization_id" not in me  # the token response says which org
    again = sandbox.token(grant_type="authorization_code", code=code, redirect_uri=REDIRECT)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert sandbox.state.calls["oauth:authorization_code"] == 2
    assert sandbox.state.calls["oauth:invalid_grant"] == 1


def test_code_is_bound_to_redirect_uri_client_and_ten_minutes(sandbox: Sandbox) -> None:
    sandbox.state.update_config(clients={CLIENT_ID: CLIENT_SECRET, "other-app": "other-secret"})
    code = sandbox.authorize()["code"][0]
    wrong_uri = sandbox.token(
        grant_type="authorization_code", code=code, redirect_uri="http://127.0.0.1:9/other"
    )
    assert wrong_uri.json()["error"] == "invalid_grant"
    # The failed attempt used the code up.
    burnt = sandbox.token(grant_type="authorization_code", code=code, redirect_uri=REDIRECT)
    assert burnt.json()["error"] == "invalid_grant"

    code = sandbox.authorize()["code"][0]
    assert sandbox.token(grant_type="authorization_code", code=code).json()["error"] == (
        "invalid_grant"
    )  # redirect_uri is required when the authorization request had one

    code = sandbox.authorize()["code"][0]
    other_client = sandbox.http.post(
        f"{sandbox.url}/oauth2/token/",
        data={
            "client_id": "other-app",
            "client_secret": "other-secret",
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
        },
        timeout=5,
    )
    assert other_client.json()["error"] == "invalid_grant"

    code = sandbox.authorize()["code"][0]
    sandbox.clock.advance(601)
    late = sandbox.token(grant_type="authorization_code", code=code, redirect_uri=REDIRECT)
    assert late.status_code == 400 and late.json()["error"] == "invalid_grant"
    assert sandbox.state.snapshot()["grants"]["total"] == 0


def test_decline_redirects_with_access_denied_and_state(sandbox: Sandbox) -> None:
    assert sandbox.authorize(decision="decline") == {"error": ["access_denied"], "state": ["s-1"]}
    without_state = sandbox.authorize(decision="decline", state="")
    assert without_state == {"error": ["access_denied"]}
    with_query = sandbox.consent(redirect_uri="https://app.example/cb?tenant=7")
    assert with_query.headers["Location"].startswith("https://app.example/cb?tenant=7&code=")
    assert sandbox.state.snapshot()["grants"]["total"] == 0


def test_consent_refuses_non_members_and_bad_requests(sandbox: Sandbox) -> None:
    refused = sandbox.consent(user="user_john", org="orga_globex")
    assert refused.status_code == 400 and "not a member of that organization" in refused.text
    assert 'name="organization_id"' in refused.text  # the form again, to choose better
    unknown_decision = sandbox.consent(decision="maybe")
    assert unknown_decision.status_code == 400

    def page(**overrides: str) -> requests.Response:
        return sandbox.http.get(
            f"{sandbox.url}/oauth2/authorize/",
            params=sandbox.authorize_params(**overrides),
            timeout=5,
        )

    for overrides in (
        {"client_id": "nope"},
        {"response_type": "token"},
        {"redirect_uri": ""},
        {"redirect_uri": "http://app.example/cb"},  # real Close demands https
        {"redirect_uri": "ftp://127.0.0.1/cb"},
        {"redirect_uri": "https://app.example/cb#frag"},
        {"redirect_uri": "https://[::1/cb"},
    ):
        answer = page(**overrides)
        assert answer.status_code == 400, overrides
        assert answer.headers["Content-Type"].startswith("text/html")
    for ok in ("https://app.example/cb", "http://localhost:5000/cb", "http://127.0.0.1/cb"):
        assert page(redirect_uri=ok).status_code == 200
    # A bad request never redirects anywhere.
    assert sandbox.consent(client_id="nope").status_code == 400


def test_token_endpoint_client_authentication_and_grant_types(sandbox: Sandbox) -> None:
    refresh = sandbox.issue()["refresh_token"]
    basic = sandbox.http.post(
        f"{sandbox.url}/oauth2/token/",
        data={"grant_type": "refresh_token", "refresh_token": refresh},
        auth=(CLIENT_ID, CLIENT_SECRET),
        timeout=5,
    )
    assert basic.status_code == 200 and basic.json()["user_id"] == "user_jane"
    for creds in ({"client_secret": "wrong"}, {"client_id": "nope"}, {"client_id": ""}):
        answer = sandbox.token(grant_type="refresh_token", refresh_token="x", **creds)
        assert answer.status_code == 401 and answer.json()["error"] == "invalid_client"
    bad_basic = sandbox.http.post(
        f"{sandbox.url}/oauth2/token/",
        data={"grant_type": "refresh_token", "refresh_token": "x"},
        auth=(CLIENT_ID, "wrong"),
        timeout=5,
    )
    assert bad_basic.status_code == 401
    unsupported = sandbox.token(grant_type="password")
    assert unsupported.status_code == 400 and unsupported.json()["error"] == (
        "unsupported_grant_type"
    )
    missing = sandbox.token(grant_type="refresh_token")
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"
    unknown = sandbox.token(grant_type="refresh_token", refresh_token="sbx_rt_unknown")
    assert unknown.status_code == 400 and unknown.json()["error"] == "invalid_grant"
    assert "error_description" in unknown.json()


# OAuth: token lifetimes, rotation, revocation ------------------------------------------------


def test_access_tokens_expire_in_real_time(sandbox: Sandbox) -> None:
    sandbox.state.config.access_token_ttl = 1.0
    pair = sandbox.issue()
    assert pair["expires_in"] == 1
    assert sandbox.api("GET", "/me/", pair["access_token"]).status_code == 200
    time.sleep(1.1)
    expired = sandbox.api("GET", "/me/", pair["access_token"])
    assert expired.status_code == 401 and "expired" in expired.json()["error"]
    assert expired.headers["WWW-Authenticate"].startswith("Bearer")
    renewed = sandbox.token(grant_type="refresh_token", refresh_token=pair["refresh_token"])
    assert sandbox.api("GET", "/me/", renewed.json()["access_token"]).status_code == 200


def test_expire_access_tokens_keeps_refresh_tokens_working(sandbox: Sandbox) -> None:
    pair = sandbox.issue()
    assert sandbox.state.expire_access_tokens() == 1
    assert sandbox.api("GET", "/me/", pair["access_token"]).status_code == 401
    renewed = sandbox.token(grant_type="refresh_token", refresh_token=pair["refresh_token"])
    assert renewed.status_code == 200
    assert sandbox.api("GET", "/me/", renewed.json()["access_token"]).status_code == 200


def test_refresh_tokens_rotate_and_the_used_one_dies(sandbox: Sandbox) -> None:
    first = sandbox.issue()
    second = sandbox.token(grant_type="refresh_token", refresh_token=first["refresh_token"]).json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert (second["user_id"], second["organization_id"]) == ("user_jane", "orga_acme")
    reused = sandbox.token(grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    third = sandbox.token(grant_type="refresh_token", refresh_token=second["refresh_token"])
    assert third.status_code == 200
    assert sandbox.state.calls["oauth:refresh_token"] == 3
    assert sandbox.state.calls["oauth:invalid_grant"] == 1
    assert sandbox.state.snapshot()["grants"] == {"total": 1, "active": 1, "revoked": 0}


def test_concurrent_refreshes_with_one_token_exactly_one_wins(sandbox: Sandbox) -> None:
    refresh = sandbox.issue()["refresh_token"]
    racers = 6
    barrier = threading.Barrier(racers)
    answers: list[requests.Response] = []
    lock = threading.Lock()

    def race() -> None:
        barrier.wait()
        answer = requests.post(
            f"{sandbox.url}/oauth2/token/",
            data={
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "grant_type": "refresh_token",
                "refresh_token": refresh,
            },
            timeout=10,
        )
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=race) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] + [400] * (racers - 1)
    assert all(a.json()["error"] == "invalid_grant" for a in answers if a.status_code == 400)


def test_revoke_kills_the_whole_grant_and_nothing_else(sandbox: Sandbox) -> None:
    pair, other_grant, john = sandbox.issue(), sandbox.issue(), sandbox.issue("user_john")
    renewed = sandbox.token(grant_type="refresh_token", refresh_token=pair["refresh_token"]).json()
    # Revoking with the (new) refresh token kills every access token of the grant.
    assert sandbox.revoke(renewed["refresh_token"]).status_code == 200
    for access in (pair["access_token"], renewed["access_token"]):
        dead = sandbox.api("GET", "/me/", access)
        assert dead.status_code == 401 and "revoked" in dead.json()["error"]
    gone = sandbox.token(grant_type="refresh_token", refresh_token=renewed["refresh_token"])
    assert gone.json()["error"] == "invalid_grant"
    assert sandbox.api("GET", "/me/", other_grant["access_token"]).status_code == 200
    # An access token works as the handle too; unknown tokens are a 200 (RFC 7009).
    assert sandbox.revoke(other_grant["access_token"]).status_code == 200
    assert sandbox.api("GET", "/me/", other_grant["access_token"]).status_code == 401
    assert sandbox.revoke("sbx_rt_never_issued").status_code == 200
    assert sandbox.revoke(john["refresh_token"], client_secret="wrong").status_code == 401
    assert sandbox.api("GET", "/me/", john["access_token"]).status_code == 200
    assert sandbox.state.calls["oauth:revoke"] == 4


def test_revoke_takes_client_credentials_as_form_fields_only(sandbox: Sandbox) -> None:
    pair = sandbox.issue()
    basic_only = sandbox.http.post(
        f"{sandbox.url}/oauth2/revoke/",
        data={"token": pair["refresh_token"]},
        auth=(CLIENT_ID, CLIENT_SECRET),
        timeout=5,
    )
    assert basic_only.status_code == 401
    assert basic_only.json()["error"] == "invalid_client"
    assert "form fields" in basic_only.json()["error_description"]
    assert sandbox.api("GET", "/me/", pair["access_token"]).status_code == 200  # still alive
    wrong_form = sandbox.http.post(
        f"{sandbox.url}/oauth2/revoke/",
        data={"token": pair["refresh_token"], "client_id": CLIENT_ID, "client_secret": "x"},
        auth=(CLIENT_ID, CLIENT_SECRET),  # right Basic credentials do not rescue wrong fields
        timeout=5,
    )
    assert wrong_form.status_code == 401
    assert sandbox.revoke(pair["refresh_token"]).status_code == 200
    assert sandbox.api("GET", "/me/", pair["access_token"]).status_code == 401


def test_user_revoking_the_app_kills_all_their_grants(sandbox: Sandbox) -> None:
    acme, globex, john = (
        sandbox.issue(),
        sandbox.issue(org="orga_globex"),
        sandbox.issue("user_john"),
    )
    assert sandbox.state.revoke_grant("user_jane") == 2
    for pair in (acme, globex):
        assert sandbox.api("GET", "/me/", pair["access_token"]).status_code == 401
        refreshed = sandbox.token(grant_type="refresh_token", refresh_token=pair["refresh_token"])
        assert refreshed.json()["error"] == "invalid_grant"
    assert sandbox.api("GET", "/me/", john["access_token"]).status_code == 200


def test_api_requires_a_bearer_token(sandbox: Sandbox) -> None:
    for header in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer nope"}):
        answer = sandbox.http.get(f"{sandbox.url}/api/v1/me/", headers=header, timeout=5)
        assert answer.status_code == 401 and isinstance(answer.json()["error"], str)
    assert sandbox.state.calls["GET /me/"] == 3


def test_org_users_lists_the_members_of_the_token_org(sandbox: Sandbox) -> None:
    answer = sandbox.api("GET", "/user/", sandbox.issue()["access_token"]).json()
    assert answer["has_more"] is False
    assert [(u["id"], u["email"]) for u in answer["data"]] == [
        ("user_jane", "jane@acme.com"),
        ("user_john", "john@acme.com"),
        ("user_bob", "bob@acme.com"),
        ("user_carol", "carol@acme.com"),
        ("user_dave", "dave@acme.com"),
        ("user_erin", "erin@acme.com"),
    ]
    assert answer["data"][0]["organizations"] == ["orga_acme", "orga_globex"]
    assert answer["data"][1]["organizations"] == ["orga_acme"]
    globex = sandbox.api("GET", "/user/", sandbox.issue("user_ann", "orga_globex")["access_token"])
    assert {u["id"] for u in globex.json()["data"]} == {"user_jane", "user_ann"}
    page = sandbox.api(
        "GET", "/user/", sandbox.issue()["access_token"], params={"_skip": 4, "_limit": 4}
    ).json()
    assert [u["id"] for u in page["data"]] == ["user_dave", "user_erin"]
    assert page["has_more"] is False


# Scheduling links ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "url": "https://a.example/x"}, "source_id"),
        ({"source_id": "1", "url": "https://a.example/x"}, "name"),
        ({"source_id": "1", "name": "   ", "url": "https://a.example/x"}, "name"),
        ({"source_id": "1", "name": "x" * 256, "url": "https://a.example/x"}, "name"),
        ({"source_id": "1", "name": "x"}, "url"),
        ({"source_id": "1", "name": "x", "url": "/relative"}, "url"),
        ({"source_id": "1", "name": "x", "url": "ftp://a.example/x"}, "url"),
        ({"source_id": "1", "name": "x", "url": "https://"}, "url"),
        ({"source_id": "1", "name": "x", "url": "https://a.example/a b"}, "url"),
        ({"source_id": "1", "name": "x", "url": "https://a.example/" + "p" * 2040}, "url"),
        ({"source_id": "s" * 256, "name": "x", "url": "https://a.example/x"}, "source_id"),
        ({"source_id": 7, "name": "x", "url": "https://a.example/x"}, "source_id"),
        (link_body("1", description="d" * 5001), "description"),
        (link_body("1", source_type="t" * 101), "source_type"),
        (link_body("1", duration_in_minutes=0), "duration_in_minutes"),
        (link_body("1", duration_in_minutes=1441), "duration_in_minutes"),
        (link_body("1", duration_in_minutes=30.5), "duration_in_minutes"),
        (link_body("1", duration_in_minutes=True), "duration_in_minutes"),
    ],
)
def test_validation_errors_name_the_field(
    sandbox: Sandbox, body: dict[str, Any], field: str
) -> None:
    answer = sandbox.api(
        "POST", "/scheduling_link/integration/", sandbox.issue()["access_token"], json=body
    )
    assert answer.status_code == 400
    assert answer.json()["error"] == "Validation error"
    assert set(answer.json()["field-errors"]) == {field}
    assert sandbox.state.links() == []


def test_malformed_bodies_are_refused_and_unknown_fields_ignored(sandbox: Sandbox) -> None:
    access = sandbox.issue()["access_token"]
    headers = {"Authorization": f"Bearer {access}", "Content-Type": "application/json"}
    url = f"{sandbox.url}/api/v1/scheduling_link/integration/"
    for raw in ("{not json", "[1, 2]", ""):
        answer = sandbox.http.post(url, data=raw, headers=headers, timeout=5)
        assert answer.status_code == 400 and "field-errors" not in answer.json()
    accepted = sandbox.api(
        "POST",
        "/scheduling_link/integration/",
        access,
        json=link_body(color="blue", description=None, duration_in_minutes=1440),
    )
    assert accepted.status_code == 200 and "color" not in accepted.json()
    assert accepted.json()["duration_in_minutes"] == 1440


def test_integration_upsert_is_idempotent_and_delete_is_204_then_404(sandbox: Sandbox) -> None:
    access = sandbox.issue()["access_token"]
    body = link_body(source_type="One-on-one", duration_in_minutes=30, description="Say hi")
    first = sandbox.api("POST", "/scheduling_link/integration/", access, json=body)
    assert first.status_code == 200
    link = first.json()
    assert set(link) >= LINK_KEYS and re.fullmatch(r"schlnk_\w+", link["id"])
    assert {k: link[k] for k in ("type", "source", "oauth_client_id", "user_id")} == {
        "type": "USER",
        "source": "THIRD_PARTY",
        "oauth_client_id": CLIENT_ID,
        "user_id": "user_jane",
    }
    assert (link["organization_id"], link["source_type"], link["duration_in_minutes"]) == (
        "orga_acme",
        "One-on-one",
        30,
    )
    repeat = sandbox.api("POST", "/scheduling_link/integration/", access, json=body).json()
    changed = sandbox.api(
        "POST", "/scheduling_link/integration/", access, json={**body, "name": "Intro v2"}
    ).json()
    assert repeat["id"] == changed["id"] == link["id"]
    assert changed["name"] == "Intro v2" and changed["date_created"] == link["date_created"]
    assert changed["date_updated"] >= link["date_updated"]
    assert [(x["id"], x["name"]) for x in sandbox.state.links()] == [(link["id"], "Intro v2")]

    deleted = sandbox.api("DELETE", "/scheduling_link/integration/evt-1/", access)
    assert deleted.status_code == 204 and deleted.content == b""
    again = sandbox.api("DELETE", "/scheduling_link/integration/evt-1/", access)
    assert again.status_code == 404 and again.json()["error"]
    assert sandbox.state.links() == []
    assert sandbox.state.calls["POST /scheduling_link/integration/"] == 3
    assert sandbox.state.calls["DELETE /scheduling_link/integration/{source_id}/"] == 2


def test_a_source_id_with_a_slash_is_refused(sandbox: Sandbox) -> None:
    access = sandbox.issue()["access_token"]
    for source_id in ("a/b", "/", "evt/1/"):
        answer = sandbox.api(
            "POST", "/scheduling_link/integration/", access, json=link_body(source_id)
        )
        assert answer.status_code == 400, source_id
        assert set(answer.json()["field-errors"]) == {"source_id"}
    assert sandbox.state.links() == []


def test_the_delete_path_never_matches_a_slash_inside_the_source_id(sandbox: Sandbox) -> None:
    pair = sandbox.issue()
    grant = sandbox.state.authenticate(pair["access_token"])
    # Planted behind the HTTP validation: what a lenient Close would have stored.
    sandbox.state.upsert_integration(grant, link_body("a/b"))
    sandbox.state.upsert_integration(grant, link_body("a"))
    for path in ("a/b/", "a%2Fb/", "a%2fb/"):  # %2F is decoded before routing
        answer = sandbox.api("DELETE", f"/scheduling_link/integration/{path}", pair["access_token"])
        assert answer.status_code == 404, path
        assert "field-errors" not in answer.json()
    assert sorted(link["source_id"] for link in sandbox.state.links()) == ["a", "a/b"]
    assert "DELETE /scheduling_link/integration/{source_id}/" not in sandbox.state.calls


@pytest.mark.parametrize(
    "source_id", ["a b?c#d%e.f", "100%", "%2F", "é€ ünï", "a.b", "...", "~!$&'()*+,;=:@"]
)
def test_percent_encoded_source_ids_round_trip(sandbox: Sandbox, source_id: str) -> None:
    access = sandbox.issue()["access_token"]
    created = sandbox.api(
        "POST", "/scheduling_link/integration/", access, json=link_body(source_id)
    )
    assert created.status_code == 200 and created.json()["source_id"] == source_id
    path = f"/scheduling_link/integration/{quote(source_id, safe='')}/"
    assert sandbox.api("DELETE", path, access).status_code == 204
    assert sandbox.state.links() == []


def test_dot_source_ids_are_deleted_with_percent_encoded_dots(sandbox: Sandbox) -> None:
    """ "." and ".." are valid ids. The sandbox itself does not normalise dot segments, but HTTP
    clients (urllib3, so requests) remove a literal `/./` or `/../` before sending: a client
    must send `%2E`, which survives the client and is decoded by the sandbox into the id."""
    access = sandbox.issue()["access_token"]
    for source_id in (".", ".."):
        created = sandbox.api(
            "POST", "/scheduling_link/integration/", access, json=link_body(source_id)
        )
        assert created.status_code == 200
    # Literal dots: requests turns .../integration/./ into .../integration/ (the route
    # /scheduling_link/{link_id}/ with link id "integration": 404) and .../integration/../
    # into /scheduling_link/ (405). Nothing is deleted.
    literal = sandbox.api("DELETE", "/scheduling_link/integration/./", access)
    assert literal.request.path_url == "/api/v1/scheduling_link/integration/"
    assert literal.status_code == 404
    assert sandbox.api("DELETE", "/scheduling_link/integration/../", access).status_code == 405
    assert sorted(link["source_id"] for link in sandbox.state.links()) == [".", ".."]
    # A raw request with literal dots reaches the sandbox as sent and deletes the link.
    host, port = sandbox.url.removeprefix("http://").split(":")
    raw = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        raw.request(
            "DELETE",
            "/api/v1/scheduling_link/integration/./",
            headers={"Authorization": f"Bearer {access}"},
        )
        assert raw.getresponse().status == 204
    finally:
        raw.close()
    assert [link["source_id"] for link in sandbox.state.links()] == [".."]
    dots = sandbox.api("DELETE", "/scheduling_link/integration/%2E%2E/", access)
    assert dots.status_code == 204 and sandbox.state.links() == []
    again = sandbox.api("DELETE", "/scheduling_link/integration/%2E/", access)
    assert again.status_code == 404


def test_links_of_other_users_orgs_apps_and_manual_ones_are_separate(sandbox: Sandbox) -> None:
    sandbox.state.update_config(clients={CLIENT_ID: CLIENT_SECRET, "other-app": "other-secret"})
    ours = sandbox.issue()["access_token"]
    theirs = sandbox.issue(client_id="other-app")["access_token"]
    jane_globex = sandbox.issue(org="orga_globex")["access_token"]
    john = sandbox.issue("user_john")["access_token"]
    manual = sandbox.state.add_manual_link(
        "user_jane", "orga_acme", "Mine", "https://cal.example/me"
    )
    created = {
        name: sandbox.api("POST", "/scheduling_link/integration/", token, json=link_body()).json()
        for name, token in (
            ("ours", ours),
            ("theirs", theirs),
            ("globex", jane_globex),
            ("john", john),
        )
    }
    assert len({link["id"] for link in created.values()}) == 4  # same source_id, four links
    assert created["theirs"]["oauth_client_id"] == "other-app"
    assert created["globex"]["organization_id"] == "orga_globex"

    listed = sandbox.api("GET", "/scheduling_link/", ours).json()["data"]
    assert [link["id"] for link in listed] == [
        manual["id"],
        created["ours"]["id"],
        created["theirs"]["id"],
    ]
    # Deleting through our app removes only our link.
    assert sandbox.api("DELETE", "/scheduling_link/integration/evt-1/", ours).status_code == 204
    remaining = {link["id"] for link in sandbox.state.links()}
    assert remaining == {manual["id"]} | {created[k]["id"] for k in ("theirs", "globex", "john")}
    assert sandbox.api("DELETE", "/scheduling_link/integration/evt-1/", ours).status_code == 404
    assert len(sandbox.state.links(user_id="user_jane", org_id="orga_globex")) == 1


def test_manual_links_and_the_third_party_ones_cannot_be_touched_by_id(sandbox: Sandbox) -> None:
    jane, john = sandbox.issue()["access_token"], sandbox.issue("user_john")["access_token"]
    manual = sandbox.api(
        "POST",
        "/scheduling_link/",
        jane,
        json={"name": "Coffee", "url": "https://cal.example/coffee", "source_id": "ignored"},
    ).json()
    assert (manual["source"], manual["source_id"], manual["oauth_client_id"]) == (
        "MANUAL",
        None,
        None,
    )
    assert sandbox.api("GET", f"/scheduling_link/{manual['id']}/", jane).json() == manual
    renamed = sandbox.api(
        "PUT", f"/scheduling_link/{manual['id']}/", jane, json={"name": "Tea"}
    ).json()
    assert renamed["name"] == "Tea" and renamed["url"] == "https://cal.example/coffee"
    blank = sandbox.api("PUT", f"/scheduling_link/{manual['id']}/", jane, json={"url": "nope"})
    assert blank.status_code == 400 and "url" in blank.json()["field-errors"]

    ours = sandbox.api("POST", "/scheduling_link/integration/", jane, json=link_body()).json()
    hijack = sandbox.api("PUT", f"/scheduling_link/{ours['id']}/", jane, json={"name": "x"})
    assert hijack.status_code == 400 and "integration" in hijack.json()["error"]
    assert sandbox.api("DELETE", f"/scheduling_link/{ours['id']}/", jane).status_code == 400
    assert sandbox.state.links(user_id="user_jane")[1]["name"] == "Intro"

    # Another user's link does not exist for John.
    assert sandbox.api("GET", f"/scheduling_link/{manual['id']}/", john).status_code == 404
    assert sandbox.api("DELETE", f"/scheduling_link/{manual['id']}/", john).status_code == 404
    deleted = sandbox.api("DELETE", f"/scheduling_link/{manual['id']}/", jane)
    assert deleted.status_code == 200 and deleted.json() == {}
    assert [link["id"] for link in sandbox.state.links()] == [ours["id"]]


def test_listing_paginates_in_a_stable_order_with_has_more(sandbox: Sandbox) -> None:
    access = sandbox.issue()["access_token"]
    for n in range(7):
        sandbox.api(
            "POST",
            "/scheduling_link/integration/",
            access,
            json=link_body(str(n), name=f"L{n}", url=f"https://b.example/{n}"),
        )
    pages, skip = [], 0
    while True:
        page = sandbox.api(
            "GET", "/scheduling_link/", access, params={"_skip": skip, "_limit": 3}
        ).json()
        pages.append([link["source_id"] for link in page["data"]])
        skip += len(page["data"])
        if not page["has_more"]:
            break
    assert pages == [["0", "1", "2"], ["3", "4", "5"], ["6"]]
    bad = sandbox.api("GET", "/scheduling_link/", access, params={"_limit": "lots"})
    assert bad.status_code == 400 and "_limit" in bad.json()["field-errors"]


def test_listing_limit_defaults_to_and_is_capped_at_100(sandbox: Sandbox) -> None:
    access = sandbox.issue()["access_token"]
    for n in range(105):
        sandbox.state.add_manual_link("user_jane", "orga_acme", f"M{n}", f"https://m.example/{n}")
    for params in ({}, {"_limit": 500}):
        first = sandbox.api("GET", "/scheduling_link/", access, params=params).json()
        assert len(first["data"]) == 100 and first["has_more"] is True
    rest = sandbox.api("GET", "/scheduling_link/", access, params={"_skip": 100}).json()
    assert [link["name"] for link in rest["data"]] == [f"M{n}" for n in range(100, 105)]
    assert rest["has_more"] is False


def test_a_link_deleted_by_hand_in_close_is_recreated_with_a_new_id(sandbox: Sandbox) -> None:
    access = sandbox.issue()["access_token"]
    first = sandbox.api("POST", "/scheduling_link/integration/", access, json=link_body()).json()
    assert sandbox.state.delete_link(first["id"]) is True
    assert sandbox.api("GET", "/scheduling_link/", access).json()["data"] == []
    assert sandbox.api("DELETE", "/scheduling_link/integration/evt-1/", access).status_code == 404
    again = sandbox.api("POST", "/scheduling_link/integration/", access, json=link_body()).json()
    assert again["id"] != first["id"]
    assert sandbox.state.delete_link("schlnk_missing") is False


# Shared links ----------------------------------------------------------------------------------


def test_shared_links_need_manage_customizations(sandbox: Sandbox) -> None:
    john, jane = sandbox.issue("user_john")["access_token"], sandbox.issue()["access_token"]
    denied = sandbox.api("POST", "/shared_scheduling_link/", john, json={"name": "Team demo"})
    assert denied.status_code == 403 and "Manage Customizations" in denied.json()["error"]
    shared = sandbox.api(
        "POST", "/shared_scheduling_link/", jane, json={"name": "30-min intro", "description": "d"}
    ).json()
    assert (shared["type"], shared["template_tag"], shared["organization_id"]) == (
        "SHARED",
        "30_min_intro",
        "orga_acme",
    )
    path = f"/shared_scheduling_link/{shared['id']}/"
    # Reading needs the permission too (close-api.md: the whole endpoint family does).
    assert sandbox.api("GET", path, john).status_code == 403
    assert sandbox.api("GET", "/shared_scheduling_link/", john).status_code == 403
    assert sandbox.api("PUT", path, john, json={"name": "x"}).status_code == 403
    assert sandbox.api("DELETE", path, john).status_code == 403
    assert sandbox.api("GET", path, jane).json()["name"] == "30-min intro"
    renamed = sandbox.api("PUT", path, jane, json={"name": "Demo: Q&A!"}).json()
    assert renamed["template_tag"] == "demo_q_a"
    invalid = sandbox.api("POST", "/shared_scheduling_link/", jane, json={"name": ""})
    assert invalid.status_code == 400 and "name" in invalid.json()["field-errors"]
    listed = sandbox.api("GET", "/shared_scheduling_link/", jane).json()
    assert [s["id"] for s in listed["data"]] == [shared["id"]] and listed["has_more"] is False
    jane_globex = sandbox.issue(org="orga_globex")["access_token"]
    assert sandbox.api("GET", path, jane_globex).status_code == 404  # another org's link
    assert sandbox.api("DELETE", path, jane).json() == {}
    assert sandbox.api("GET", path, jane).status_code == 404


def test_shared_link_mappings_for_admins_and_link_owners(sandbox: Sandbox) -> None:
    john, jane = sandbox.issue("user_john")["access_token"], sandbox.issue()["access_token"]
    shared = sandbox.api("POST", "/shared_scheduling_link/", jane, json={"name": "Demo"}).json()
    johns_link = sandbox.api("POST", "/scheduling_link/integration/", john, json=link_body()).json()
    base = {
        "organization_id": "orga_acme",
        "shared_scheduling_link_id": shared["id"],
        "user_id": "user_john",
    }
    mapping = "/shared_scheduling_link_association/"
    # John may map the shared link to his own link, not to a bare URL.
    own = sandbox.api(
        "POST", mapping, john, json={**base, "user_scheduling_link_id": johns_link["id"]}
    )
    assert own.status_code == 200 and own.json()["user_scheduling_link_id"] == johns_link["id"]
    url_target = {**base, "url": "https://b.example/john"}
    assert sandbox.api("POST", mapping, john, json=url_target).status_code == 403
    assert sandbox.api("POST", mapping, jane, json=url_target).json()["url"] == (
        "https://b.example/john"
    )
    assert sandbox.state.associations() == [{**base, "url": "https://b.example/john"}]

    both = {**url_target, "user_scheduling_link_id": johns_link["id"]}
    assert sandbox.api("POST", mapping, jane, json=both).status_code == 400
    outsider = {**url_target, "user_id": "user_ann"}
    assert "user_id" in sandbox.api("POST", mapping, jane, json=outsider).json()["field-errors"]
    not_his = {**base, "user_scheduling_link_id": "schlnk_nope"}
    assert sandbox.api("POST", mapping, jane, json=not_his).status_code == 400

    unmap = f"{mapping}unmap/"
    assert sandbox.api("POST", unmap, jane, json=base).status_code == 200
    assert sandbox.api("POST", unmap, jane, json=base).status_code == 404
    assert sandbox.state.associations() == []


# Rate limits -----------------------------------------------------------------------------------


def test_a_burst_beyond_the_limit_gets_429_with_headers_and_does_nothing(sandbox: Sandbox) -> None:
    sandbox.state.config.rate_limit_per_token = 5.0
    access = sandbox.issue()["access_token"]
    sandbox.clock.freeze()  # count exactly, however slow the machine
    answers = [
        sandbox.api(
            "POST", "/scheduling_link/integration/", access, json=link_body(f"b{n}", name=f"B{n}")
        )
        for n in range(8)
    ]
    assert [a.status_code for a in answers] == [200] * 5 + [429] * 3
    assert [link["source_id"] for link in sandbox.state.links()] == [f"b{n}" for n in range(5)]
    assert [rate_header(a)["remaining"] for a in answers] == [4, 3, 2, 1, 0, 0, 0, 0]
    first = rate_header(answers[0])
    assert first["limit"] == 5 and first["reset"] == 0.2  # one request back every 1/5 s
    assert "Retry-After" not in answers[0].headers
    # No Close source mentions RateLimit-Policy: the sandbox never sends it.
    assert not any("ratelimit-policy" in a.headers for a in answers)

    refused = answers[-1]
    assert rate_header(refused) == {"limit": 5, "remaining": 0, "reset": 1}
    assert refused.headers["Retry-After"] == "1"
    error = refused.json()["error"]
    assert error["message"] == "API call count exceeded for this period"
    assert (error["rate_limit"], error["rate_window"], error["rate_reset"]) == (5, 1, 0.2)
    assert error["rate_limit_type"] == "key"
    assert sandbox.state.calls["429"] == 3
    assert sandbox.state.calls["429:scheduling_link_integration"] == 3
    # Groups are separate budgets; waiting what Close said is enough.
    assert sandbox.api("GET", "/me/", access).status_code == 200
    sandbox.clock.advance(error["rate_reset"])
    retried = sandbox.api("POST", "/scheduling_link/integration/", access, json=link_body("b7"))
    assert retried.status_code == 200 and rate_header(retried)["remaining"] == 0


@pytest.mark.parametrize(
    ("mode", "rate_limit", "retry_after", "rate_reset"),
    [
        ("full", True, True, True),
        ("none", False, True, True),
        ("retry_after_only", False, True, False),
        ("body_only", False, False, True),
        ("bare", False, False, False),
    ],
)
def test_rate_limit_header_modes(
    sandbox: Sandbox, mode: str, rate_limit: bool, retry_after: bool, rate_reset: bool
) -> None:
    configured = sandbox.control("POST", "config", json={"rate_limit_headers": mode})
    assert configured.status_code == 200 and configured.json()["rate_limit_headers"] == mode
    sandbox.state.update_config(rate_limit_per_token=1.0)
    pair = sandbox.issue()
    sandbox.clock.freeze()
    passed, refused = [
        sandbox.api("GET", "/scheduling_link/", pair["access_token"]) for _ in (1, 2)
    ]
    assert (passed.status_code, refused.status_code) == (200, 429)
    for answer in (passed, refused):
        assert ("RateLimit" in answer.headers) is rate_limit
        assert "RateLimit-Policy" not in answer.headers
    assert "Retry-After" not in passed.headers
    assert ("Retry-After" in refused.headers) is retry_after
    error = refused.json()["error"]
    assert ("rate_reset" in error) is rate_reset
    assert error["message"] == "API call count exceeded for this period"
    assert sandbox.state.links() == []
    # The token endpoint answers the same way.
    token = sandbox.token(grant_type="refresh_token", refresh_token=pair["refresh_token"])
    assert token.status_code == 200 and ("RateLimit" in token.headers) is rate_limit


def test_rate_limit_headers_setting_is_validated(sandbox: Sandbox) -> None:
    assert sandbox.state.config.rate_limit_headers == "full"
    for bad in ("partial", "", None, 1):
        answer = sandbox.control("POST", "config", json={"rate_limit_headers": bad})
        assert answer.status_code == 400 and "rate_limit_headers" in answer.json()["error"]
    with pytest.raises(ValueError, match="rate_limit_headers must be one of full, none"):
        sandbox.state.update_config(rate_limit_headers="Full")
    assert sandbox.state.config.rate_limit_headers == "full"
    sandbox.state.update_config(rate_limit_headers="bare")
    sandbox.state.reset()
    assert sandbox.state.config.rate_limit_headers == "full"


def test_a_client_pacing_from_the_headers_reaches_the_limit_without_429(
    sandbox: Sandbox,
) -> None:
    limit = 20
    sandbox.state.config.rate_limit_per_token = float(limit)
    access = sandbox.issue()["access_token"]
    started, statuses = time.monotonic(), []
    for _ in range(3 * limit):
        answer = sandbox.api("GET", "/scheduling_link/", access)
        statuses.append(answer.status_code)
        header = rate_header(answer)
        if header["remaining"] == 0:
            time.sleep(header["reset"])
    elapsed = time.monotonic() - started
    assert 429 not in statuses
    assert 3 * limit / elapsed >= 0.8 * limit  # sustained: about the limit, not far below


def test_the_org_limit_is_shared_by_the_org_tokens_not_across_orgs(sandbox: Sandbox) -> None:
    sandbox.state.config.rate_limit_per_token = 5.0  # org limit: 3x = 15
    acme = [sandbox.issue()["access_token"] for _ in range(2)] + [
        sandbox.issue("user_john")["access_token"] for _ in range(2)
    ]
    sandbox.clock.freeze()
    answers = [sandbox.api("GET", "/scheduling_link/", t) for t in acme for _ in range(5)]
    # 20 calls, every token within its own 5: the org's 15 run out during the fourth token.
    assert [a.status_code for a in answers] == [200] * 15 + [429] * 5
    refused = answers[15:]
    assert {a.json()["error"]["rate_limit_type"] for a in refused} == {"organization"}
    assert {a.json()["error"]["rate_limit"] for a in refused} == {15}
    # The header reports the tighter bucket: the org's, when it has fewer left.
    assert [rate_header(a)["remaining"] for a in answers[10:15]] == [4, 3, 2, 1, 0]
    # Another org's budget is untouched, and so is each token's own when alone in its org.
    globex = [sandbox.issue("user_ann", "orga_globex")["access_token"] for _ in range(2)]
    assert [
        sandbox.api("GET", "/scheduling_link/", t).status_code for t in globex for _ in range(5)
    ] == [200] * 10


def test_an_explicit_org_limit_and_switching_limits_off(sandbox: Sandbox) -> None:
    sandbox.state.update_config(rate_limit_per_token=5.0, rate_limit_per_org=6.0)
    tokens = [sandbox.issue()["access_token"] for _ in range(2)]
    sandbox.clock.freeze()
    statuses = [sandbox.api("GET", "/me/", t).status_code for t in tokens for _ in range(4)]
    assert statuses == [200] * 6 + [429] * 2
    sandbox.state.update_config(rate_limits_enabled=False)
    assert {sandbox.api("GET", "/me/", tokens[0]).status_code for _ in range(10)} == {200}


def test_token_endpoint_is_rate_limited_per_grant_and_a_429_does_not_rotate(
    sandbox: Sandbox,
) -> None:
    sandbox.state.config.rate_limit_per_token = 2.0
    refresh = sandbox.issue()["refresh_token"]
    sandbox.clock.freeze()
    for _ in range(2):
        answer = sandbox.token(grant_type="refresh_token", refresh_token=refresh)
        assert answer.status_code == 200 and "RateLimit" in answer.headers
        refresh = answer.json()["refresh_token"]
    limited = sandbox.token(grant_type="refresh_token", refresh_token=refresh)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "1"
    sandbox.clock.advance(limited.json()["error"]["rate_reset"])
    assert sandbox.token(grant_type="refresh_token", refresh_token=refresh).status_code == 200
    assert sandbox.state.calls["429:oauth"] == 1


# Faults and latency ----------------------------------------------------------------------------


def test_fail_next_and_error_rate_answer_5xx_without_doing_the_work(sandbox: Sandbox) -> None:
    access = sandbox.issue()["access_token"]
    sandbox.state.set_faults(fail_next=2, fail_status=502)
    assert [sandbox.api("GET", "/me/", access).status_code for _ in range(3)] == [502, 502, 200]
    assert sandbox.state.calls["fault:fail_next"] == 2

    faults = sandbox.control("POST", "faults", json={"error_rate": 1.0})
    assert faults.status_code == 200 and faults.json()["error_rate"] == 1.0
    statuses = {
        sandbox.api("POST", "/scheduling_link/integration/", access, json=link_body()).status_code
        for _ in range(12)
    }
    assert statuses <= {500, 502, 503} and len(statuses) >= 2
    assert sandbox.state.links() == []
    sandbox.control("POST", "faults", json={"error_rate": 1.0, "error_status": 503})
    assert sandbox.api("GET", "/me/", access).status_code == 503
    # The OAuth endpoints are spared unless asked for; /_sandbox/* always is.
    refresh = sandbox.issue()["refresh_token"]
    assert sandbox.token(grant_type="refresh_token", refresh_token=refresh).status_code == 200
    assert sandbox.control("GET", "calls").status_code == 200

    assert sandbox.control("POST", "faults", json={}).json()["error_rate"] == 0
    assert sandbox.api("GET", "/me/", access).status_code == 200


def test_faults_can_target_groups_including_oauth(sandbox: Sandbox) -> None:
    pair = sandbox.issue()
    sandbox.state.set_faults(error_rate=1.0, error_status=500, groups=["me", "oauth"])
    assert sandbox.api("GET", "/me/", pair["access_token"]).status_code == 500
    assert sandbox.api("GET", "/scheduling_link/", pair["access_token"]).status_code == 200
    broken = sandbox.token(grant_type="refresh_token", refresh_token=pair["refresh_token"])
    assert broken.status_code == 500
    sandbox.state.set_faults()
    # The failed refresh did not rotate: the token is still good.
    assert (
        sandbox.token(grant_type="refresh_token", refresh_token=pair["refresh_token"]).status_code
        == 200
    )


def test_seeded_faults_are_reproducible(sandbox: Sandbox) -> None:
    sandbox.state.update_config(rate_limits_enabled=False)
    access = sandbox.issue()["access_token"]

    def run() -> list[int]:
        sandbox.state.set_faults(error_rate=0.5)
        return [sandbox.api("GET", "/me/", access).status_code for _ in range(16)]

    first = run()  # the fixture reset the generator to the seed
    sandbox.state.reset()
    access = sandbox.issue()["access_token"]
    sandbox.state.update_config(rate_limits_enabled=False)
    assert run() == first
    assert 200 in first and set(first) - {200} <= {500, 502, 503} and len(set(first)) >= 2


def test_latency_from_config_and_faults(sandbox: Sandbox) -> None:
    access = sandbox.issue()["access_token"]
    sandbox.control("POST", "config", json={"latency_ms": 100})
    started = time.monotonic()
    assert sandbox.api("GET", "/me/", access).status_code == 200
    assert time.monotonic() - started >= 0.1
    sandbox.state.set_faults(latency_ms=100)
    started = time.monotonic()
    sandbox.api("GET", "/me/", access)
    assert time.monotonic() - started >= 0.2  # both add up
    started = time.monotonic()
    consent = sandbox.http.get(
        f"{sandbox.url}/oauth2/authorize/", params=sandbox.authorize_params(), timeout=5
    )
    assert consent.status_code == 200 and time.monotonic() - started < 0.1


def test_timeouts_with_and_without_the_write_happening(sandbox: Sandbox) -> None:
    access = sandbox.issue()["access_token"]
    sandbox.state.set_faults(timeout_rate=1.0, timeout_seconds=0.4, timeout_applies_write=False)
    with pytest.raises(requests.Timeout):
        sandbox.api(
            "POST", "/scheduling_link/integration/", access, json=link_body("lost"), timeout=0.15
        )
    sandbox.state.set_faults(timeout_rate=1.0, timeout_seconds=0.4, timeout_applies_write=True)
    with pytest.raises(requests.Timeout):
        sandbox.api(
            "POST", "/scheduling_link/integration/", access, json=link_body("kept"), timeout=0.15
        )
    # The second write is done although its answer never arrived; a retry is idempotent.
    assert [link["source_id"] for link in sandbox.state.links()] == ["kept"]
    sandbox.state.set_faults()
    time.sleep(0.3)  # let the held answers go
    retry = sandbox.api("POST", "/scheduling_link/integration/", access, json=link_body("kept"))
    assert retry.status_code == 200 and len(sandbox.state.links()) == 1
    assert sandbox.state.calls["fault:timeout"] == 2


def test_bad_fault_settings_are_refused(sandbox: Sandbox) -> None:
    for body in ({"error_rate": 2}, {"nonsense": 1}, {"groups": ["nowhere"]}, {"fail_next": -1}):
        answer = sandbox.control("POST", "faults", json=body)
        assert answer.status_code == 400 and answer.json()["error"], body
    with pytest.raises(ValueError, match="error_status"):
        sandbox.state.set_faults(error_status=200)


# Inspection and control over HTTP, and the shape of errors ------------------------------------


def test_inspection_endpoints(sandbox: Sandbox) -> None:
    access = sandbox.issue()["access_token"]
    sandbox.api("POST", "/scheduling_link/integration/", access, json=link_body())
    calls = sandbox.control("GET", "calls").json()
    assert calls == {
        "POST /scheduling_link/integration/": 1,
        "by:user_jane POST /scheduling_link/integration/": 1,  # who made it
    }
    state = sandbox.control("GET", "state").json()
    assert {"links", "orgs", "users", "grants", "shared_links", "faults", "config"} <= set(state)
    assert [link["source_id"] for link in state["links"]] == ["evt-1"]
    assert state["grants"] == {"total": 1, "active": 1, "revoked": 0}
    assert sandbox.control("POST", "reset-calls").status_code == 200
    assert sandbox.control("GET", "calls").json() == {}

    assert sandbox.control("POST", "expire-tokens").json() == {"expired": 1}
    assert sandbox.api("GET", "/me/", access).status_code == 401
    fresh = sandbox.issue()
    assert sandbox.control("POST", "revoke-grant", json={"user_id": "user_jane"}).json() == {
        "revoked": 2
    }
    assert sandbox.api("GET", "/me/", fresh["access_token"]).status_code == 401

    config = sandbox.control(
        "POST", "config", json={"access_token_ttl": 2, "rate_limit_per_token": 7}
    )
    assert config.json()["access_token_ttl"] == 2.0 and config.json()["rate_limit_per_token"] == 7
    assert sandbox.issue()["expires_in"] == 2
    for bad in ({"access_token_ttl": 0}, {"bogus": 1}, {"rate_limits_enabled": "yes"}):
        assert sandbox.control("POST", "config", json=bad).status_code == 400

    assert sandbox.control("POST", "reset").status_code == 200
    assert sandbox.state.links() == [] and sandbox.state.config.access_token_ttl == 3600


def test_control_adds_users_issues_tokens_and_edits_links(sandbox: Sandbox) -> None:
    added = sandbox.control(
        "POST",
        "users",
        json={
            "orgs": [{"id": "orga_bench_1", "name": "Bench 1"}],
            "users": [{"id": "user_b1", "organizations": ["orga_bench_1"]}],
        },
    )
    assert added.json() == {"orgs": 1, "users": 1}
    tokens = sandbox.control(
        "POST", "issue-tokens", json={"user_id": "user_b1", "organization_id": "orga_bench_1"}
    ).json()
    me = sandbox.api("GET", "/me/", tokens["access_token"]).json()
    assert me["organizations"] == [{"id": "orga_bench_1", "name": "Bench 1"}]
    assert me["email"] == "user_b1@example.com"
    not_member = sandbox.control(
        "POST", "issue-tokens", json={"user_id": "user_b1", "organization_id": "orga_acme"}
    )
    assert not_member.status_code == 400
    assert sandbox.control("POST", "issue-tokens", json={}).status_code == 400

    manual = sandbox.control(
        "POST",
        "manual-links",
        json={
            "user_id": "user_b1",
            "organization_id": "orga_bench_1",
            "name": "By hand",
            "url": "https://cal.example/hand",
        },
    ).json()
    listed = sandbox.api("GET", "/scheduling_link/", tokens["access_token"]).json()["data"]
    assert [link["id"] for link in listed] == [manual["id"]]
    assert sandbox.control("DELETE", f"links/{manual['id']}").status_code == 204
    assert sandbox.control("DELETE", f"links/{manual['id']}").status_code == 404
    assert sandbox.control("POST", "users", data="{oops").status_code == 400


def test_python_api_supports_many_orgs_and_users(sandbox: Sandbox) -> None:
    for org in range(50):
        sandbox.state.add_org(f"orga_{org}", f"Org {org}")
        for user in range(10):
            sandbox.state.add_user(
                f"user_{org}_{user}", "U", str(user), f"u{org}.{user}@x.example", [f"orga_{org}"]
            )
    started = time.monotonic()
    pairs = [
        sandbox.state.issue_tokens(CLIENT_ID, f"user_{n % 50}_{n % 10}", f"orga_{n % 50}")
        for n in range(500)
    ]
    assert time.monotonic() - started < 1.0
    assert len({p["refresh_token"] for p in pairs}) == 500
    assert sandbox.api("GET", "/me/", pairs[-1]["access_token"]).json()["id"] == "user_49_9"
    with pytest.raises(ValueError, match="not a member"):
        sandbox.state.issue_tokens(CLIENT_ID, "user_1_1", "orga_2")


def test_unknown_paths_and_methods_answer_json(sandbox: Sandbox) -> None:
    access = sandbox.issue()["access_token"]
    missing = sandbox.api("GET", "/nope/", access)
    assert missing.status_code == 404 and missing.json()["error"]
    wrong_method = sandbox.api("PATCH", "/scheduling_link/integration/", access)
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]
    assert "POST" in wrong_method.headers["Allow"]
    token_get = sandbox.http.get(f"{sandbox.url}/oauth2/token/", timeout=5)
    assert token_get.status_code == 405 and "error" in token_get.json()
    html = sandbox.http.get(f"{sandbox.url}/elsewhere", timeout=5)
    assert html.status_code == 404 and html.headers["Content-Type"].startswith("text/html")
