"""Token lifecycle against the sandbox, which enforces rotation and expiry."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from cryptography.fernet import Fernet

from service.close.tokens import NeedsReauth
from service.connections.key_rotation import rotate_all
from service.infra.crypto import TokenCipher
from service.infra.db import utcnow
from service.infra.models import Connection, ConnectionStatus, SyncRun
from service.services import Services
from service.settings import Settings
from service.sync.runner import run_sync
from tests.conftest import new_account
from tests.helpers import connect_directly, event_type, our_links


def expire_stored_token(svc: Services, connection_id: int) -> None:
    with svc.db.session() as session:
        connection = session.get(Connection, connection_id)
        assert connection is not None
        connection.token_expires_at = utcnow() - timedelta(seconds=1)
        connection.token_refresh_at = connection.token_expires_at


def test_eight_concurrent_callers_cause_exactly_one_refresh(
    services: Services, sandbox: Any
) -> None:
    cid = connect_directly(services, sandbox, new_account())
    sandbox.state.expire_access_tokens()
    expire_stored_token(services, cid)
    sandbox.state.reset_calls()
    barrier = threading.Barrier(8)
    results: list[str] = []
    errors: list[BaseException] = []

    def worker() -> None:
        # Each thread is its own "worker": its own provider, its own DB sessions.
        provider = services.tokens.provider(cid)
        barrier.wait()
        try:
            results.append(provider.get())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert len(set(results)) == 1  # all eight use the one fresh token
    assert sandbox.state.calls["oauth:refresh_token"] == 1
    assert sandbox.state.calls["oauth:invalid_grant"] == 0
    # The rotated pair was persisted: the stored refresh token is the new one and works.
    expire_stored_token(services, cid)
    assert services.tokens.current(cid)[0] != results[0]
    assert sandbox.state.calls["oauth:invalid_grant"] == 0


def test_a_401_mid_sync_refreshes_once_and_carries_on(
    services: Services, sandbox: Any, source: Any
) -> None:
    account = new_account()
    source.store.put_all(account, [event_type(n, account) for n in range(1, 6)])
    cid = connect_directly(services, sandbox, account)
    sandbox.state.expire_access_tokens()  # Close says expired; our stored expiry does not know
    sandbox.state.reset_calls()
    run_sync(services, cid, trigger="manual")
    assert len(our_links(sandbox)) == 5
    assert sandbox.state.calls["oauth:refresh_token"] == 1


def test_revoked_grant_marks_needs_reauth_without_a_retry_storm(
    services: Services, sandbox: Any, source: Any
) -> None:
    account = new_account()
    source.store.put_all(account, [event_type(n, account) for n in range(1, 21)])
    cid = connect_directly(services, sandbox, account)
    sandbox.state.revoke_grant("user_jane")
    sandbox.state.reset_calls()
    [run_id] = run_sync(services, cid, trigger="manual")
    with services.db.session() as session:
        run = session.get(SyncRun, run_id)
        connection = session.get(Connection, cid)
        assert run is not None and connection is not None
        assert run.status == "failed" and "re-authorization" in (run.error or "")
        assert connection.status == ConnectionStatus.NEEDS_REAUTH
    # One rejected API call per parallel slot at most, and a single refresh attempt.
    assert sandbox.state.calls["oauth:refresh_token"] == 1
    assert (
        sandbox.state.calls["POST /scheduling_link/integration/"]
        <= services.settings.CLOSE_CONCURRENCY
    )
    # Syncs for it stop: the next attempt calls nobody.
    sandbox.state.reset_calls()
    run_sync(services, cid, trigger="manual")
    assert sum(sandbox.state.calls.values()) == 0
    try:
        services.tokens.current(cid)[0]
    except NeedsReauth:
        pass
    else:
        raise AssertionError("a connection that needs re-authorization handed out a token")


def test_key_rotation_round_trip_on_postgres(
    make_settings: Callable[..., Settings], pg_url: str, redis_url: str, sandbox: Any, source: Any
) -> None:
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    before = make_settings(DATABASE_URL=pg_url, REDIS_URL=redis_url, TOKEN_ENCRYPTION_KEYS=old_key)
    svc = Services(before, enqueue=lambda *_: None)
    account = new_account()
    cid = connect_directly(svc, sandbox, account)
    with svc.db.session() as session:
        connection = session.get(Connection, cid)
        assert connection is not None
        stored = connection.refresh_token_enc or ""
    svc.close()

    both = make_settings(
        DATABASE_URL=pg_url, REDIS_URL=redis_url, TOKEN_ENCRYPTION_KEYS=f"{new_key},{old_key}"
    )
    rotated, undecryptable = rotate_all(both)
    assert rotated >= 1 and cid not in undecryptable

    after = make_settings(DATABASE_URL=pg_url, REDIS_URL=redis_url, TOKEN_ENCRYPTION_KEYS=new_key)
    svc = Services(after, enqueue=lambda *_: None)
    with svc.db.session() as session:
        connection = session.get(Connection, cid)
        assert connection is not None
        assert connection.refresh_token_enc != stored
        plain = TokenCipher([new_key]).decrypt(connection.refresh_token_enc or "")
        assert plain == TokenCipher([old_key]).decrypt(stored)
    source.store.put_all(account, [event_type(1, account)])
    run_sync(svc, cid, trigger="manual")  # the re-encrypted tokens still work against Close
    assert set(our_links(sandbox)) == {"evt_1"}
    svc.close()


def test_a_401_for_a_token_refreshed_after_a_401_refreshes_no_more(
    services: Services, sandbox: Any
) -> None:
    """Found flaky in a full run: when Close refuses every call, the calls in flight with the
    token the first 401 brought each got a 401 too and each refreshed again. A token that a
    401 refresh produced and that Close refuses as well means Close refuses the connection."""
    import pytest

    from service.close.client import CloseAuthError

    cid = connect_directly(services, sandbox, new_account())
    provider = services.tokens.provider(cid)
    first = provider.get()
    sandbox.state.reset_calls()
    second = provider.refresh_after_401(first)
    assert second != first and sandbox.state.calls["oauth:refresh_token"] == 1
    assert provider.refresh_after_401(first) == second  # a call still in flight with the old
    with pytest.raises(CloseAuthError):
        provider.refresh_after_401(second)
    assert sandbox.state.calls["oauth:refresh_token"] == 1
