"""Chaos: every scenario ends with an exact comparison of Close against the desired state.

Run alone with `make chaos` (120-second fault windows), or as part of `make test` with
shorter windows (CHAOS_FAULT_SECONDS, set by the Makefile)."""

from __future__ import annotations

import random
import shutil
import subprocess
import threading
import time
from typing import Any

import psycopg
import pytest
from sqlalchemy import select

from service.infra import locks
from service.infra.db import utcnow
from service.infra.models import Connection, ConnectionStatus, SyncRun
from tests.chaos.conftest import FAULT_SECONDS, Chaos, Result, report
from tests.conftest import PG_ADMIN_URL, new_account, wait_until
from tests.helpers import connect_directly, event_type

pytestmark = [pytest.mark.chaos, pytest.mark.postgres, pytest.mark.slow]


def fleet(
    chaos: Chaos, connections: int, links: int
) -> tuple[list[int], dict[str, dict[str, dict[str, Any]]], dict[str, str]]:
    """Connections with their own Close users (orgs of 5 users) and their event types."""
    ids: list[int] = []
    desired: dict[str, dict[str, dict[str, Any]]] = {}
    user_of: dict[str, str] = {}
    for n in range(connections):
        account = new_account()
        org_id = f"orga_chaos_{n // 5}"
        user_id = f"user_chaos_{account}"
        chaos.sandbox.state.add_org(org_id, f"Chaos Org {n // 5}")
        chaos.sandbox.state.add_user(
            user_id, "Chaos", f"User {n}", f"{account}@chaos.example", [org_id]
        )
        items = [event_type(i, account) for i in range(1, links + 1)]
        chaos.source.store.put_all(account, items)
        ids.append(
            connect_directly(chaos.svc, chaos.sandbox, account, user_id=user_id, org_id=org_id)
        )
        desired[account] = {item["id"]: item for item in items}
        user_of[account] = user_id
    return ids, desired, user_of


def converge(
    chaos: Chaos,
    ids: list[int],
    desired: dict[str, Any],
    user_of: dict[str, str],
    timeout: float = 90,
) -> int:
    """Re-trigger every few seconds, as the beat would, until Close is exact; return what was
    lost (0). A trigger for a connection whose sync is running coalesces into it."""
    deadline = time.monotonic() + timeout
    next_trigger = 0.0
    while True:
        lost, _ = chaos.lost(desired, user_of)
        if lost == 0 or time.monotonic() > deadline:
            return lost
        if time.monotonic() >= next_trigger and not all(busy(chaos, cid) for cid in ids):
            chaos.trigger(ids)
            next_trigger = time.monotonic() + 5
        time.sleep(0.25)


def busy(chaos: Chaos, cid: int) -> bool:
    """A sync of this connection is under way: its latest run is queued or running, and a
    worker holds its lock, or a queued run is younger than the lock's TTL (its task is on the
    way). A run a SIGKILLed worker left behind (running, or queued with its task prefetched by
    that worker and not redelivered before the broker's visibility timeout) holds no lock once
    the TTL ran out: the beat's schedule would sync that connection again, so this does too."""
    with chaos.svc.db.session() as session:
        latest = session.execute(
            select(SyncRun.status, SyncRun.queued_at)
            .where(SyncRun.connection_id == cid)
            .order_by(SyncRun.id.desc())
            .limit(1)
        ).first()
    if latest is None or latest.status not in ("queued", "running"):
        return False
    try:
        if chaos.svc.coordinator.held([locks.sync_lock(cid)]):
            return True
    except Exception:  # the coordinator is away (a fault of the scenario): assume under way
        return True
    ttl = locks.sync_lock_ttl(chaos.svc.settings)
    return latest.status == "queued" and (utcnow() - latest.queued_at).total_seconds() < ttl


def record(
    name: str,
    started: float,
    chaos: Chaos,
    desired: dict[str, Any],
    user_of: dict[str, str],
    notes: str = "",
) -> int:
    lost, checked = chaos.lost(desired, user_of)
    calls = sum(
        n
        for key, n in chaos.sandbox.state.calls.items()
        if " /" in key and not key.startswith("by:")  # not the per-user copies
    )
    report(Result(name, time.monotonic() - started, calls, checked, lost, notes))
    return lost


def test_worker_sigkill_five_times_then_restart(chaos: Chaos) -> None:
    started = time.monotonic()
    ids, desired, user_of = fleet(chaos, 1, 200)
    chaos.sandbox.state.config.rate_limit_per_token = 1000.0
    chaos.sandbox.state.set_faults(latency_ms=30)
    rng = random.Random(7)
    for _ in range(5):
        worker = chaos.start_worker(chaos.svc.settings)
        chaos.trigger(ids)
        time.sleep(rng.uniform(0.5, 2.5))
        worker.kill()
        # A source change between crashes must not be lost either.
        account = next(iter(desired))
        sid = rng.choice(sorted(desired[account]))
        chaos.source.store.update(account, sid, name=f"changed {rng.random():.6f}")
        desired[account][sid] = {
            **desired[account][sid],
            "name": chaos.source.store.list(account)[int(sid.split("_")[1]) - 1]["name"],
        }
    chaos.sandbox.state.set_faults()
    chaos.start_worker(chaos.svc.settings)
    assert converge(chaos, ids, desired, user_of) == 0
    assert record("worker SIGKILL x5, then restart", started, chaos, desired, user_of) == 0


def test_redis_restarted_during_a_fleet_sync(chaos: Chaos) -> None:
    started = time.monotonic()
    ids, desired, user_of = fleet(chaos, 20, 15)
    chaos.sandbox.state.set_faults(latency_ms=20)
    chaos.start_worker(chaos.svc.settings, concurrency=4)
    chaos.trigger(ids)
    time.sleep(1.5)
    chaos.redis.restart()  # the broker's queue and every lock vanish
    chaos.sandbox.state.set_faults()
    assert converge(chaos, ids, desired, user_of, timeout=120) == 0
    assert record("Redis restarted during fleet sync", started, chaos, desired, user_of) == 0


def test_postgres_connections_killed_during_syncs(chaos: Chaos) -> None:
    started = time.monotonic()
    ids, desired, user_of = fleet(chaos, 5, 40)
    chaos.sandbox.state.set_faults(latency_ms=20)
    chaos.sandbox.state.config.rate_limit_per_token = 1000.0
    chaos.start_worker(chaos.svc.settings, concurrency=3)
    dbname = chaos.svc.db.engine.url.database
    stop = threading.Event()
    killed = [0]

    def killer() -> None:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            while not stop.wait(0.7):
                rows = conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    (dbname,),
                ).fetchall()
                killed[0] += len(rows)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        chaos.trigger(ids)
        time.sleep(min(FAULT_SECONDS, 8))
    finally:
        stop.set()
        thread.join(5)
    chaos.sandbox.state.set_faults()
    chaos.svc.db.engine.dispose()
    assert converge(chaos, ids, desired, user_of) == 0
    assert (
        record(
            "PostgreSQL backends terminated",
            started,
            chaos,
            desired,
            user_of,
            f"{killed[0]} killed",
        )
        == 0
    )


def test_close_fails_a_fifth_of_calls_then_recovers(chaos: Chaos) -> None:
    started = time.monotonic()
    ids, desired, user_of = fleet(chaos, 5, 30)
    chaos.start_worker(chaos.svc.settings, concurrency=3)
    chaos.sandbox.state.set_faults(
        error_rate=0.15, timeout_rate=0.05, timeout_seconds=3, timeout_applies_write=True
    )
    window_end = time.monotonic() + FAULT_SECONDS
    while time.monotonic() < window_end:
        chaos.trigger(ids)
        # Change something during the outage too.
        account = next(iter(desired))
        sid = "evt_1"
        name = f"outage change {time.monotonic():.3f}"
        chaos.source.store.update(account, sid, name=name)
        desired[account][sid] = {**desired[account][sid], "name": name}
        time.sleep(min(5.0, FAULT_SECONDS / 3))
    chaos.sandbox.state.set_faults()
    assert converge(chaos, ids, desired, user_of) == 0
    assert record("Close 20% 5xx/timeouts, then recovery", started, chaos, desired, user_of) == 0


def test_token_expiry_and_refresh_races_across_four_workers(chaos: Chaos) -> None:
    started = time.monotonic()
    ids, desired, user_of = fleet(chaos, 4, 30)
    chaos.sandbox.state.config.access_token_ttl = 2.0
    chaos.sandbox.state.expire_access_tokens()
    for _ in range(4):
        chaos.start_worker(chaos.svc.settings, concurrency=2)
    chaos.sandbox.state.set_faults(latency_ms=30)
    for _ in range(3):
        chaos.trigger(ids)
        time.sleep(2.5)
    chaos.sandbox.state.set_faults()
    assert converge(chaos, ids, desired, user_of) == 0
    assert chaos.sandbox.state.calls["oauth:invalid_grant"] == 0
    with chaos.svc.db.session() as session:
        statuses = set(session.scalars(select(Connection.status).where(Connection.id.in_(ids))))
    assert statuses == {ConnectionStatus.ACTIVE}
    refreshes = chaos.sandbox.state.calls["oauth:refresh_token"]
    assert (
        record(
            "token expiry, refresh race, 4 workers",
            started,
            chaos,
            desired,
            user_of,
            f"{refreshes} refreshes, 0 invalid_grant",
        )
        == 0
    )


def test_grant_revoked_mid_sync_harms_nothing_else(chaos: Chaos) -> None:
    started = time.monotonic()
    ids, desired, user_of = fleet(chaos, 3, 60)
    chaos.sandbox.state.set_faults(latency_ms=20)
    chaos.start_worker(chaos.svc.settings, concurrency=3)
    chaos.trigger(ids)
    time.sleep(0.7)
    victim_account = next(iter(desired))
    chaos.sandbox.state.revoke_grant(user_of[victim_account])
    chaos.sandbox.state.set_faults()
    others = {a: d for a, d in desired.items() if a != victim_account}
    assert converge(chaos, ids[1:], others, user_of) == 0
    victim = ids[0]
    wait_until(lambda: status_of(chaos, victim) == ConnectionStatus.NEEDS_REAUTH, timeout=30)
    assert (
        record("grant revoked mid-sync", started, chaos, others, user_of, "victim needs_reauth")
        == 0
    )


def status_of(chaos: Chaos, cid: int) -> str:
    with chaos.svc.db.session() as session:
        connection = session.get(Connection, cid)
        assert connection is not None
        return connection.status


@pytest.mark.skipif(shutil.which("faketime") is None, reason="Debian's faketime is not installed")
@pytest.mark.parametrize("skew", ["+120s", "-120s"])
def test_clock_skew_between_web_and_worker(chaos: Chaos, skew: str) -> None:
    started = time.monotonic()
    ids, desired, user_of = fleet(chaos, 2, 20)
    chaos.sandbox.state.config.access_token_ttl = 150.0  # expiry close to the skew
    worker = chaos.start_worker(chaos.svc.settings, concurrency=2, wrapper=["faketime", "-f", skew])
    probe = subprocess.run(
        ["faketime", "-f", skew, "date", "+%s"], capture_output=True, text=True, check=True
    )
    assert abs(int(probe.stdout) - utcnow().timestamp()) > 100  # the skew is real
    chaos.trigger(ids)
    assert converge(chaos, ids, desired, user_of) == 0
    assert chaos.sandbox.state.calls["oauth:invalid_grant"] == 0
    worker.stop()
    assert record(f"clock skew {skew} web vs worker", started, chaos, desired, user_of) == 0


def test_broker_down_mid_sync_with_changes_during_the_outage(chaos: Chaos) -> None:
    """The broker stops (not restarts) for a while during a fleet sync; changes requested
    during the outage answer as accepted (durable requests) and reach Close once it is back,
    without anyone asking twice; the worker stays up."""
    started = time.monotonic()
    ids, desired, user_of = fleet(chaos, 8, 20)
    chaos.sandbox.state.set_faults(latency_ms=60)
    chaos.sandbox.state.config.rate_limit_per_token = 1000.0
    worker = chaos.start_worker(chaos.svc.settings, concurrency=4, beat=True)
    chaos.trigger(ids)
    time.sleep(1.5)
    chaos.redis.stop()
    account = next(iter(desired))
    chaos.source.store.update(account, "evt_2", name="changed while the broker was down")
    desired[account]["evt_2"] = {
        **desired[account]["evt_2"],
        "name": "changed while the broker was down",
    }
    chaos.trigger(ids[:1])  # accepted: recorded in the database, the wake-up fails
    time.sleep(min(FAULT_SECONDS, 10))
    assert worker.alive
    chaos.redis.start()
    chaos.sandbox.state.set_faults()
    # No re-trigger: the durable requests and the scheduler tick must do it alone.
    deadline = time.monotonic() + 90
    while chaos.lost(desired, user_of)[0] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert worker.alive
    assert record("broker down mid-sync, changes meanwhile", started, chaos, desired, user_of) == 0
