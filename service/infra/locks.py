"""Every lock and flag this service keeps in the coordinator, and the timings that must agree.

The one place that names them: the sync lock, its "dirty" and "pending" flags, the token-refresh
lock and the operator sign-in slots (the webhook flood limit is counted in the database).
Backends and the lock helpers live in service.infra.coordination; this module says which keys
exist and how long each lives, relative to the one setting that drives them
(SYNC_LOCK_TTL_SECONDS).

    sync:{connection}        a run holds it (TTL, heartbeat every TTL/3)
    dirty:{connection}       a trigger arrived while the lock was held: run once more (4 x TTL)
    pending:{connection}     a coalesced sync is queued and has not started (PENDING_TTL)
    refresh:{connection}     one token refresh at a time per connection (REFRESH_LOCK_TTL)
    operator-login:{h}:{n}   one slot per failed operator sign-in (the throttle's window)
    events:deliver           one event deliverer at a time (sync lock TTL, heartbeat)
    events:dirty             events were written while the deliverer ran: go round again
    events:wake-scheduled    a delayed wake-up of the deliverer is already queued
    worker-heartbeat:{host}  a worker's last heartbeat (unix time), every WORKER_HEARTBEAT_EVERY;
                             with Redis the key is linksync:worker-heartbeat:<hostname>

Broker visibility timeout (Redis transport, BROKER_VISIBILITY_TIMEOUT_SECONDS, default 3600):
an unacknowledged task (acks_late) is handed to another worker once it is older than this,
even while the first one still runs it, and a task waiting for a countdown/ETA is redelivered
every time it passes. So: the timeout stays above the longest task (task_time_limit, 3600 s),
every countdown is clamped below half of it (service.jobs.clamp_countdown, including the busy
retry below), and a redelivered sync cannot run beside the original: the sync lock makes the
copy find the lock held, flag the holder dirty and retry, so the holder runs once more instead.
    operator-gate:{h}        held during a password check, then for the throttle's delay
    operator-session:{h}     a signed-in operator session; logout deletes it
"""

from __future__ import annotations

from service.settings import Settings

# How long a coalesced sync (the status page's Sync now) may wait in the queue before a new
# trigger enqueues again.
PENDING_TTL = 60.0
# Token refresh: long enough for a slow token endpoint; waiters give up after the same time.
REFRESH_LOCK_TTL = 30.0
# How long a disconnect waits for a running sync to let go of the lock.
DISCONNECT_LOCK_WAIT = 15.0
# The dirty flag outlives a run's lock by this factor, so a holder that dies still has a
# busy task's delayed retry pick up the follow-up.
DIRTY_TTL_FACTOR = 4.0
# A heartbeat extends a held lock this many times per TTL.
HEARTBEATS_PER_TTL = 3
# A run that ended with work still owed (it crashed on the infrastructure, or Close, the
# source or Redis failed some of its calls) puts its request back this far in the future, so
# the scheduler tick re-runs it soon, without a hot loop while the outage lasts.
RETRY_FAILED_RUN_AFTER = 15.0
# The scheduler tick re-sends a wake-up for requests pending longer than this (the normal
# after-commit wake-up had its chance; a younger request is probably being picked up).
PENDING_REQUEST_GRACE = 5.0


# Workers refresh their heartbeat this often; /readyz and doctor call a worker alive when its
# heartbeat is younger than WORKER_HEARTBEAT_STALE. The key itself lives a day, so "no worker
# has reported in X s" can say how long it has been.
WORKER_HEARTBEAT_EVERY = 10.0
WORKER_HEARTBEAT_STALE = 30.0
WORKER_HEARTBEAT_TTL = 86400.0
WORKER_HEARTBEAT_PREFIX = "worker-heartbeat:"


def worker_heartbeat(hostname: str) -> str:
    return f"{WORKER_HEARTBEAT_PREFIX}{hostname}"


def sync_lock(connection_id: int) -> str:
    return f"sync:{connection_id}"


def dirty_flag(connection_id: int) -> str:
    return f"dirty:{connection_id}"


def pending_flag(connection_id: int) -> str:
    return f"pending:{connection_id}"


def refresh_lock(connection_id: int) -> str:
    return f"refresh:{connection_id}"


def operator_login_slot(digest: str, slot: int) -> str:
    return f"operator-login:{digest}:{slot}"


EVENTS_DELIVERY_LOCK = "events:deliver"
EVENTS_DIRTY_FLAG = "events:dirty"
EVENTS_WAKE_SCHEDULED_FLAG = "events:wake-scheduled"


def operator_login_gate(digest: str) -> str:
    return f"operator-gate:{digest}"


def operator_session(digest: str) -> str:
    return f"operator-session:{digest}"


def sync_lock_ttl(settings: Settings) -> float:
    return float(settings.SYNC_LOCK_TTL_SECONDS)


def dirty_ttl(settings: Settings) -> float:
    return sync_lock_ttl(settings) * DIRTY_TTL_FACTOR


def busy_retry_countdown(settings: Settings) -> float:
    """A task that found the lock held retries after half a TTL: by then the holder has either
    run the follow-up (the retry finds no dirty flag and ends) or died (its lock expired)."""
    return max(1.0, sync_lock_ttl(settings) / 2)
