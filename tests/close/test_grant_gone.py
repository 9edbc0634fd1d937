"""When Close stops accepting a connection: the grant gone at the token endpoint, or every API
call refused (401 after a refresh, 402, 403). Against the sandbox over HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from service.close.oauth import OAuthFailure, TokenSet
from service.infra.models import Connection, ConnectionStatus, SyncRun
from service.services import Services
from service.sync.runner import run_sync
from tests.close.test_tokens import expire_stored_token
from tests.conftest import new_account
from tests.helpers import connect_directly, event_type, our_links


def connected(svc: Services, sandbox: Any, source: Any, count: int) -> int:
    account = new_account()
    source.store.put_all(account, [event_type(n, account) for n in range(1, count + 1)])
    return connect_directly(svc, sandbox, account)


def run_and_load(svc: Services, cid: int, **kwargs: Any) -> tuple[SyncRun, Connection]:
    [run_id] = run_sync(svc, cid, trigger="manual", **kwargs)
    with svc.db.session() as session:
        run = session.get(SyncRun, run_id)
        connection = session.get(Connection, cid)
        assert run is not None and connection is not None
        session.expunge_all()
        return run, connection


def test_any_other_4xx_from_the_token_endpoint_means_the_grant_is_gone(
    services: Services, sandbox: Any, source: Any
) -> None:
    cid = connected(services, sandbox, source, 5)
    expire_stored_token(services, cid)
    sandbox.state.set_faults(fail_next=50, fail_status=400, groups=["oauth"])
    sandbox.state.reset_calls()
    run, connection = run_and_load(services, cid)
    assert run.status == "failed"
    assert connection.status == ConnectionStatus.NEEDS_REAUTH
    assert "HTTP 400" in (connection.status_reason or "")
    assert sandbox.state.calls["oauth:refresh_token"] == 1  # not retried, not per link
    sandbox.state.reset_calls()
    run_and_load(services, cid)
    assert sum(sandbox.state.calls.values()) == 0  # it stopped syncing


def test_a_429_or_5xx_from_the_token_endpoint_is_not_grant_gone() -> None:
    assert not OAuthFailure("temporarily_unavailable", status=None).grant_gone
    assert not OAuthFailure("http_503", status=503).grant_gone
    assert not OAuthFailure("rate_limited", status=429).grant_gone
    assert OAuthFailure("invalid_client", status=401).grant_gone
    assert OAuthFailure("invalid_grant").grant_gone


def test_revoking_the_grant_mid_run_stops_it_after_one_refresh(
    services: Services, sandbox: Any, source: Any
) -> None:
    cid = connected(services, sandbox, source, 80)
    sandbox.state.reset_calls()
    revoked: list[int] = []

    def revoke_once(done: int, _total: int) -> None:
        if done and not revoked:
            revoked.append(done)
            sandbox.state.revoke_grant("user_jane")

    run, connection = run_and_load(services, cid, on_progress=revoke_once)
    assert revoked, "the grant was never revoked mid-run"
    assert run.status == "failed" and "re-authorization" in (run.error or "")
    assert connection.status == ConnectionStatus.NEEDS_REAUTH
    assert sandbox.state.calls["oauth:refresh_token"] == 1
    posts = sandbox.state.calls["POST /scheduling_link/integration/"]
    assert posts <= revoked[0] + 2 * services.settings.CLOSE_CONCURRENCY
    assert 0 < len(our_links(sandbox)) < 80


@pytest.mark.parametrize("status", [401, 402, 403])
def test_a_persistent_refusal_stops_the_run_and_is_recorded_on_the_connection(
    services: Services, sandbox: Any, source: Any, status: int
) -> None:
    cid = connected(services, sandbox, source, 30)
    sandbox.state.set_faults(
        fail_next=1000, fail_status=status, groups=["scheduling_link_integration"]
    )
    sandbox.state.reset_calls()
    run, connection = run_and_load(services, cid)
    assert run.status == "failed" and f"({status})" in (run.error or "")
    assert (connection.status_reason or "").startswith("Close refused this connection's calls")
    assert connection.status == ConnectionStatus.ACTIVE
    concurrency = services.settings.CLOSE_CONCURRENCY
    # One call per parallel slot (twice for a 401: once more after the refresh), not per link.
    assert sandbox.state.calls["POST /scheduling_link/integration/"] <= 2 * concurrency
    assert sandbox.state.calls["oauth:refresh_token"] <= (1 if status == 401 else 0)
    # Once Close accepts the calls again, the next run syncs and clears the reason.
    sandbox.state.set_faults()
    run, connection = run_and_load(services, cid)
    assert run.status == "succeeded" and len(our_links(sandbox)) == 30
    assert connection.status_reason is None


def test_a_token_response_with_a_null_refresh_token_keeps_the_previous_one() -> None:
    data = {"access_token": "at", "refresh_token": None, "expires_in": 3600}
    assert TokenSet.from_response(data, previous_refresh="rt-old").refresh_token == "rt-old"
    with pytest.raises(OAuthFailure, match="lacks refresh_token"):
        TokenSet.from_response(data)
