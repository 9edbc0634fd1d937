"""Member connections through HTTP (our app and the real sandbox's consent page), the member
API and team coverage: a member joins the admin's Close org or is refused with a clear page;
an email that differs is kept as a warning; coverage counts who has links in Close."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from service.app import create_app
from service.infra.models import Connection
from service.services import Services
from service.sync.runner import run_sync
from tests.conftest import API_KEY
from tests.connections.test_connect_flow import Browser
from tests.helpers import connect_directly

AUTH = {"Authorization": f"Bearer {API_KEY}"}
MEMBERS = [
    {"id": "m_jane", "email": "jane@acme.com", "name": "Jane Doe"},
    {"id": "m_bob", "email": "bob@acme.com", "name": "Bob Brown"},
    {"id": "m_carol", "email": "carol@acme.com", "name": "Carol White"},
    {"id": "m_zoe", "email": "zoe@example.com", "name": "Zoe Quinn"},
]


@pytest.fixture
def browser(services: Services) -> Browser:
    return Browser(services)


@pytest.fixture
def api(services: Services) -> FlaskClient:
    return create_app(services.settings, services=services).test_client()


def team_account(services: Services, sandbox: Any, source: Any, browser: Browser) -> str:
    account, _ = browser.new_connect()
    base = f"https://book.example.com/{account}"
    source.store.put_all(
        account,
        [
            {"id": "bob1", "name": "Bob's call", "url": f"{base}/bob", "owner_id": "m_bob"},
            {
                "id": "disc",
                "name": "Discovery",
                "url": f"{base}/disc",
                "managed": True,
                "assignments": [
                    {"member_id": m, "url": f"{base}/{m}/disc"}
                    for m in ("m_jane", "m_bob", "m_carol", "m_zoe")
                ],
            },
        ],
    )
    source.store.put_members(account, MEMBERS)
    admin = connect_directly(services, sandbox, account)
    run_sync(services, admin, trigger="manual")
    return account


def member_connect(browser: Browser, account: str, member: str, user: str, org: str) -> Any:
    _, token = browser.new_connect(account, member_id=member)
    callback = browser.consent(browser.start(token), user=user, org=org)
    return browser.client.get(callback)


def test_a_member_connects_into_the_admins_org(
    services: Services, sandbox: Any, source: Any, browser: Browser, api: FlaskClient
) -> None:
    account = team_account(services, sandbox, source, browser)
    _, token = browser.new_connect(account, member_id="m_bob")
    page = browser.client.get(f"/connect/{token}").get_data(as_text=True)
    assert "Connect your Close user for Acme Inc.'s booking pages" in page
    assert "Bob Brown" in page and "bob@acme.com" in page

    response = member_connect(browser, account, "m_bob", "user_bob", "orga_acme")
    assert response.status_code == 303
    status = api.get(f"/api/v1/accounts/{account}/members/m_bob/connection", headers=AUTH)
    assert status.status_code == 200
    body = status.json
    assert body["member_id"] == "m_bob" and body["status"] == "active"
    assert body["close_user"]["id"] == "user_bob" and body["email_warning"] is None
    # The account's connection is still the admin's.
    admin = api.get(f"/api/v1/accounts/{account}/connection", headers=AUTH).json
    assert admin["close_user"]["id"] == "user_jane" and "member_id" not in admin

    with services.db.session() as session:
        bob = session.query(Connection).filter_by(account_id=account, member_id="m_bob").one()
        bob_id = bob.id
    run_sync(services, bob_id, trigger="manual")
    coverage = api.get(f"/api/v1/accounts/{account}/coverage", headers=AUTH).json
    by_member = {m["member_id"]: m for m in coverage["members"]}
    assert by_member["m_bob"]["connection"]["status"] == "active"
    assert by_member["m_bob"]["links"] == 2
    assert by_member["m_jane"]["connection"]["via"] == "admin"
    assert by_member["m_zoe"]["close_user"] is None and "not a user" in by_member["m_zoe"]["reason"]
    assert by_member["m_carol"]["shared_mappings"][0]["target"] == "url"
    assert coverage["totals"] == {
        "covered": 3,
        "connected": 2,
        "mapped_only": 1,
        "unmatched": 1,
        "total": 4,
    }
    assert coverage["shared_links"] == {"available": True, "reason": None}

    gone = api.delete(f"/api/v1/accounts/{account}/members/m_bob/connection", headers=AUTH)
    assert gone.status_code == 200 and gone.json["status"] == "disconnected"
    assert api.get(f"/api/v1/accounts/{account}/connection", headers=AUTH).json["status"] == (
        "active"
    )


def test_another_org_is_refused_with_a_clear_page(
    services: Services, sandbox: Any, source: Any, browser: Browser
) -> None:
    account = team_account(services, sandbox, source, browser)
    response = member_connect(browser, account, "m_bob", "user_jane", "orga_globex")
    assert response.status_code == 409
    text = response.get_data(as_text=True)
    assert "Globex" in text and "Acme Inc." in text
    with services.db.session() as session:
        assert session.query(Connection).filter_by(account_id=account).count() == 1


def test_an_email_mismatch_is_recorded_as_a_warning(
    services: Services, sandbox: Any, source: Any, browser: Browser, api: FlaskClient
) -> None:
    account = team_account(services, sandbox, source, browser)
    assert member_connect(browser, account, "m_bob", "user_carol", "orga_acme").status_code == 303
    body = api.get(f"/api/v1/accounts/{account}/members/m_bob/connection", headers=AUTH).json
    assert "carol@acme.com" in body["email_warning"] and "bob@acme.com" in body["email_warning"]


def test_member_id_is_validated_and_unknown_members_are_404(
    services: Services, sandbox: Any, source: Any, browser: Browser, api: FlaskClient
) -> None:
    account = team_account(services, sandbox, source, browser)
    bad = api.post(
        "/api/v1/connect-sessions", json={"account_id": account, "member_id": ""}, headers=AUTH
    )
    assert bad.status_code == 400 and bad.json["error"]["field"] == "member_id"
    ok = api.post(
        "/api/v1/connect-sessions",
        json={"account_id": account, "member_id": "m_carol"},
        headers=AUTH,
    )
    assert ok.status_code == 201
    missing = api.get(f"/api/v1/accounts/{account}/members/m_nobody/connection", headers=AUTH)
    assert missing.status_code == 404 and "m_nobody" in missing.json["error"]["message"]


def test_coverage_says_when_shared_links_are_unavailable(
    services: Services, sandbox: Any, source: Any, browser: Browser, api: FlaskClient
) -> None:
    sandbox.state.set_permissions("user_jane", "orga_acme", [])
    account = team_account(services, sandbox, source, browser)
    coverage = api.get(f"/api/v1/accounts/{account}/coverage", headers=AUTH).json
    assert coverage["shared_links"]["available"] is False
    assert "Manage Customizations" in coverage["shared_links"]["reason"]
    assert coverage["totals"]["covered"] == 1  # Jane, through the admin connection


def test_the_coverage_command_prints_covered_n_of_m(
    services: Services, sandbox: Any, source: Any, browser: Browser
) -> None:
    from click.testing import CliRunner

    from service.cli import main
    from tests.conftest import settings_env

    account = team_account(services, sandbox, source, browser)
    env = {k: v for k, v in settings_env(services.settings).items() if k != "PYTHONPATH"}
    result = CliRunner().invoke(main, ["coverage", account], env=env)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("covered 3 of 4")
    assert "zoe@example.com" in result.output and "not a user" in result.output
    missing = CliRunner().invoke(main, ["coverage", "no-such-account"], env=env)
    assert missing.exit_code == 1 and "no-such-account" in missing.output
