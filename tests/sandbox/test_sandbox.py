"""The Close sandbox enforces what close-api.md says; every other test trusts it, so these
drive it over real HTTP exactly as a client would."""

from __future__ import annotations

import threading
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

CLIENT = {"client_id": "linksync-sandbox", "client_secret": "sandbox-secret"}
REDIRECT = "http://127.0.0.1:9/callback"


def authorize(
    sandbox: Any, decision: str = "approve", user: str = "user_jane", org: str = "orga_acme"
) -> dict[str, list[str]]:
    params = {
        "client_id": CLIENT["client_id"],
        "response_type": "code",
        "redirect_uri": REDIRECT,
        "state": "s-1",
    }
    page = requests.get(f"{sandbox.url}/oauth2/authorize/", params=params, timeout=5)
    assert (
        page.status_code == 200
        and 'name="organization_id"' in page.text
        and "Acme Inc." in page.text
    )
    answer = requests.post(
        f"{sandbox.url}/oauth2/authorize/",
        data={**params, "decision": decision, "user_id": user, "organization_id": org},
        allow_redirects=False,
        timeout=5,
    )
    assert answer.status_code == 302 and answer.headers["Location"].startswith(REDIRECT)
    return parse_qs(urlsplit(answer.headers["Location"]).query)


def token(sandbox: Any, **form: str) -> requests.Response:
    return requests.post(f"{sandbox.url}/oauth2/token/", data={**CLIENT, **form}, timeout=5)


def api(sandbox: Any, method: str, path: str, access: str, **kwargs: Any) -> requests.Response:
    return requests.request(
        method,
        f"{sandbox.url}/api/v1{path}",
        headers={"Authorization": f"Bearer {access}"},
        timeout=10,
        **kwargs,
    )


def issued(sandbox: Any, user: str = "user_jane", org: str = "orga_acme") -> dict[str, Any]:
    return dict(sandbox.state.issue_tokens(CLIENT["client_id"], user, org))


def test_code_flow_consent_exchange_and_single_use_codes(sandbox: Any) -> None:
    query = authorize(sandbox)
    assert query["state"] == ["s-1"]
    exchanged = token(
        sandbox, grant_type="authorization_code", code=query["code"][0], redirect_uri=REDIRECT
    )
    assert exchanged.status_code == 200
    body = exchanged.json()
    assert body["token_type"] == "Bearer" and body["scope"] == "all.full_access offline_access"
    assert (
        body["organization_id"] == "orga_acme"
        and body["user_id"] == "user_jane"
        and body["expires_in"] > 0
    )
    again = token(
        sandbox, grant_type="authorization_code", code=query["code"][0], redirect_uri=REDIRECT
    )
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    me = api(sandbox, "GET", "/me/", body["access_token"]).json()
    assert (me["first_name"], me["email"]) == ("Jane", "jane@acme.com")
    assert {"id": "orga_acme", "name": "Acme Inc."} in me["organizations"]


def test_decline_non_member_org_bad_client_and_redirects(sandbox: Any) -> None:
    assert authorize(sandbox, decision="decline") == {"error": ["access_denied"], "state": ["s-1"]}
    params = {
        "client_id": CLIENT["client_id"],
        "response_type": "code",
        "redirect_uri": REDIRECT,
        "state": "x",
    }
    refused = requests.post(
        f"{sandbox.url}/oauth2/authorize/",
        data={
            **params,
            "decision": "approve",
            "user_id": "user_john",
            "organization_id": "orga_globex",
        },
        allow_redirects=False,
        timeout=5,
    )
    assert refused.status_code == 400 and "not a member" in refused.text
    assert (
        requests.get(
            f"{sandbox.url}/oauth2/authorize/", params={**params, "client_id": "nope"}, timeout=5
        ).status_code
        == 400
    )
    https_only = {**params, "redirect_uri": "http://example.com/cb"}
    assert (
        requests.get(f"{sandbox.url}/oauth2/authorize/", params=https_only, timeout=5).status_code
        == 400
    )
    wrong_secret = requests.post(
        f"{sandbox.url}/oauth2/token/",
        data={
            "client_id": CLIENT["client_id"],
            "client_secret": "x",
            "grant_type": "refresh_token",
        },
        timeout=5,
    )
    assert wrong_secret.status_code == 401 and wrong_secret.json()["error"] == "invalid_client"


def test_access_tokens_expire(sandbox: Any) -> None:
    sandbox.state.config.access_token_ttl = 1.0
    access = issued(sandbox)["access_token"]
    assert api(sandbox, "GET", "/me/", access).status_code == 200
    time.sleep(1.2)
    expired = api(sandbox, "GET", "/me/", access)
    assert expired.status_code == 401 and "expired" in expired.json()["error"]


def test_refresh_tokens_rotate_and_the_old_one_dies(sandbox: Any) -> None:
    first = issued(sandbox)
    second = token(sandbox, grant_type="refresh_token", refresh_token=first["refresh_token"]).json()
    assert second["refresh_token"] != first["refresh_token"]
    reused = token(sandbox, grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    assert (
        token(
            sandbox, grant_type="refresh_token", refresh_token=second["refresh_token"]
        ).status_code
        == 200
    )


def test_two_concurrent_refreshes_with_one_token_one_wins(sandbox: Any) -> None:
    refresh = issued(sandbox)["refresh_token"]
    barrier = threading.Barrier(2)
    statuses: list[int] = []

    def go() -> None:
        barrier.wait()
        statuses.append(
            token(sandbox, grant_type="refresh_token", refresh_token=refresh).status_code
        )

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(statuses) == [200, 400]


def test_revoke_and_user_removal_kill_the_grant(sandbox: Any) -> None:
    pair = issued(sandbox)
    assert (
        requests.post(
            f"{sandbox.url}/oauth2/revoke/",
            data={**CLIENT, "token": pair["refresh_token"]},
            timeout=5,
        ).status_code
        == 200
    )
    assert api(sandbox, "GET", "/me/", pair["access_token"]).status_code == 401
    assert (
        token(sandbox, grant_type="refresh_token", refresh_token=pair["refresh_token"]).json()[
            "error"
        ]
        == "invalid_grant"
    )
    other = issued(sandbox)
    assert sandbox.state.revoke_grant("user_jane") >= 1
    assert api(sandbox, "GET", "/me/", other["access_token"]).status_code == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "url": "https://a.example/x"}, "source_id"),
        ({"source_id": "1", "url": "https://a.example/x"}, "name"),
        ({"source_id": "1", "name": "x"}, "url"),
        ({"source_id": "1", "name": "x", "url": "/relative"}, "url"),
        ({"source_id": "1", "name": "x", "url": "ftp://a.example/x"}, "url"),
        ({"source_id": "1", "name": "x" * 256, "url": "https://a.example/x"}, "name"),
        (
            {"source_id": "1", "name": "x", "url": "https://a.example/x", "duration_in_minutes": 0},
            "duration_in_minutes",
        ),
        (
            {"source_id": "1", "name": "x", "url": "https://a.example/x", "source_type": "t" * 101},
            "source_type",
        ),
    ],
)
def test_validation_errors_name_the_field(sandbox: Any, body: dict[str, Any], field: str) -> None:
    response = api(
        sandbox, "POST", "/scheduling_link/integration/", issued(sandbox)["access_token"], json=body
    )
    assert response.status_code == 400 and field in response.json()["field-errors"]
    assert sandbox.state.links(user_id="user_jane") == []


def test_integration_upsert_is_idempotent_and_scoped(sandbox: Any) -> None:
    jane, john = issued(sandbox)["access_token"], issued(sandbox, "user_john")["access_token"]
    body = {
        "source_id": "evt-1",
        "name": "Intro",
        "url": "https://b.example/intro",
        "source_type": "One-on-one",
        "duration_in_minutes": 30,
    }
    first = api(sandbox, "POST", "/scheduling_link/integration/", jane, json=body).json()
    second = api(
        sandbox, "POST", "/scheduling_link/integration/", jane, json={**body, "name": "Intro v2"}
    ).json()
    assert first["id"] == second["id"] and second["name"] == "Intro v2"
    assert (first["source"], first["type"], first["oauth_client_id"]) == (
        "THIRD_PARTY",
        "USER",
        "linksync-sandbox",
    )
    john_link = api(sandbox, "POST", "/scheduling_link/integration/", john, json=body).json()
    assert john_link["id"] != first["id"]  # keyed per user
    manual = sandbox.state.add_manual_link(
        "user_jane", "orga_acme", "Mine", "https://cal.example/me"
    )
    assert (
        api(
            sandbox, "PUT", f"/scheduling_link/{first['id']}/", jane, json={"name": "hijack"}
        ).status_code
        == 400
    )
    assert api(sandbox, "DELETE", "/scheduling_link/integration/evt-1/", jane).status_code == 204
    assert api(sandbox, "DELETE", "/scheduling_link/integration/evt-1/", jane).status_code == 404
    remaining = {link["id"] for link in sandbox.state.links()}
    assert (
        manual["id"] in remaining and john_link["id"] in remaining and first["id"] not in remaining
    )


def test_listing_paginates_with_has_more(sandbox: Any) -> None:
    access = issued(sandbox)["access_token"]
    for n in range(7):
        api(
            sandbox,
            "POST",
            "/scheduling_link/integration/",
            access,
            json={"source_id": str(n), "name": f"L{n}", "url": f"https://b.example/{n}"},
        )
    pages, skip = [], 0
    while True:
        page = api(
            sandbox, "GET", "/scheduling_link/", access, params={"_skip": skip, "_limit": 3}
        ).json()
        pages.append(page["data"])
        skip += len(page["data"])
        if not page["has_more"]:
            break
    assert [len(p) for p in pages] == [3, 3, 1]
    assert sorted(link["source_id"] for p in pages for link in p) == [str(n) for n in range(7)]


def test_rate_limits_per_token_and_per_org(sandbox: Any) -> None:
    sandbox.state.config.rate_limit_per_token = 5.0
    access = issued(sandbox)["access_token"]
    statuses = [api(sandbox, "GET", "/scheduling_link/", access) for _ in range(8)]
    limited = [r for r in statuses if r.status_code == 429]
    assert limited, [r.status_code for r in statuses]
    first = limited[0]
    assert first.headers["RateLimit"].startswith("limit=5, remaining=0, reset=")
    assert "w=1" in first.headers["RateLimit-Policy"] and int(first.headers["Retry-After"]) >= 1
    assert first.json()["error"]["rate_reset"] > 0
    assert "remaining=" in statuses[0].headers["RateLimit"]
    # A client that paces itself at the limit is never refused.
    time.sleep(1.2)
    paced = []
    for _ in range(6):
        paced.append(api(sandbox, "GET", "/scheduling_link/", access).status_code)
        time.sleep(0.21)
    assert 429 not in paced
    # The org limit (3x) is shared by the org's tokens; another org is not affected.
    time.sleep(1.2)
    org_tokens = [issued(sandbox)["access_token"] for _ in range(4)]
    codes = [
        api(sandbox, "GET", "/scheduling_link/", t).status_code
        for t in org_tokens
        for _ in range(5)
    ]
    assert codes.count(429) >= 4  # 20 calls against an org budget of 15
    other_org = issued(sandbox, "user_ann", "orga_globex")["access_token"]
    assert api(sandbox, "GET", "/scheduling_link/", other_org).status_code == 200


def test_fault_injection_switches(sandbox: Any) -> None:
    access = issued(sandbox)["access_token"]
    sandbox.state.set_faults(fail_next=2, fail_status=502)
    assert [api(sandbox, "GET", "/me/", access).status_code for _ in range(3)] == [502, 502, 200]
    requests.post(
        f"{sandbox.url}/_sandbox/faults", json={"error_rate": 1.0, "error_status": 500}, timeout=5
    )
    assert api(sandbox, "GET", "/me/", access).status_code == 500
    requests.post(f"{sandbox.url}/_sandbox/faults", json={"latency_ms": 150}, timeout=5)
    started = time.monotonic()
    assert api(sandbox, "GET", "/me/", access).status_code == 200
    assert time.monotonic() - started >= 0.15
    requests.post(
        f"{sandbox.url}/_sandbox/faults",
        json={"timeout_rate": 1.0, "timeout_seconds": 0.5, "timeout_applies_write": True},
        timeout=5,
    )
    with pytest.raises(requests.Timeout):
        requests.post(
            f"{sandbox.url}/api/v1/scheduling_link/integration/",
            json={"source_id": "t", "name": "T", "url": "https://t.example"},
            headers={"Authorization": f"Bearer {access}"},
            timeout=0.2,
        )
    time.sleep(0.5)
    assert [link["source_id"] for link in sandbox.state.links(user_id="user_jane")] == [
        "t"
    ]  # the write happened anyway
    requests.post(f"{sandbox.url}/_sandbox/faults", json={}, timeout=5)


def test_shared_links_need_manage_customizations(sandbox: Any) -> None:
    john = issued(sandbox, "user_john")["access_token"]
    assert (
        api(
            sandbox, "POST", "/shared_scheduling_link/", john, json={"name": "Team demo"}
        ).status_code
        == 403
    )
    jane = issued(sandbox)["access_token"]
    shared = api(
        sandbox, "POST", "/shared_scheduling_link/", jane, json={"name": "30-min Team demo"}
    ).json()
    assert shared["template_tag"] == "30_min_team_demo"
    mapped = api(
        sandbox,
        "POST",
        "/shared_scheduling_link_association/",
        jane,
        json={
            "organization_id": "orga_acme",
            "shared_scheduling_link_id": shared["id"],
            "user_id": "user_john",
            "url": "https://b.example/john",
        },
    )
    assert mapped.status_code == 200
    unmapped = api(
        sandbox,
        "POST",
        "/shared_scheduling_link_association/unmap/",
        jane,
        json={
            "organization_id": "orga_acme",
            "shared_scheduling_link_id": shared["id"],
            "user_id": "user_john",
        },
    )
    assert unmapped.status_code == 200


def test_inspection_endpoints(sandbox: Any) -> None:
    access = issued(sandbox)["access_token"]
    api(sandbox, "GET", "/me/", access)
    calls = requests.get(f"{sandbox.url}/_sandbox/calls", timeout=5).json()
    assert calls["GET /me/"] == 1
    state = requests.get(f"{sandbox.url}/_sandbox/state", timeout=5).json()
    assert {"links", "orgs", "users", "grants"} <= set(state)
    requests.post(f"{sandbox.url}/_sandbox/reset-calls", timeout=5)
    assert requests.get(f"{sandbox.url}/_sandbox/calls", timeout=5).json() == {}
    assert requests.get(f"{sandbox.url}/api/v1/nope/", timeout=5).status_code == 404
