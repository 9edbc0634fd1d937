"""LinkSync benchmarks: `make bench` (= python -m bench.run), or `python -m bench.run --quick`
for a tiny version of every scenario (used by the smoke test). Each scenario starts the real
stack, runs ours and the naive baseline in the same run, prints a row and writes
bench/results/<scenario>.json."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import psutil
import requests
from sqlalchemy import event, text, update

from bench.events_latency import measure as measure_events_latency
from bench.naive import naive_sync
from bench.stack import ROOT, Stack, stack
from service.demo_source.app import generated_event_types
from service.infra.crypto import TokenCipher
from service.infra.models import Connection
from service.jobs import celery_enqueue
from service.services import Services
from service.sync.scheduler import due_connections

RESULTS = ROOT / "bench" / "results"
WEB_WORKERS = int(os.environ.get("BENCH_WEB_WORKERS", "2"))  # gunicorn processes


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def wait_runs(s: Stack, since: int, count: int, timeout: float) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        runs = s.runs_finished(since)
        if len(runs) >= count or time.monotonic() > deadline:
            return runs
        time.sleep(0.05)


def close_writes(calls: dict[str, int]) -> int:
    return calls.get("POST /scheduling_link/integration/", 0) + calls.get(
        "DELETE /scheduling_link/integration/{source_id}/", 0
    )


def close_api_calls(calls: dict[str, int]) -> int:
    return sum(
        n for key, n in calls.items() if key.split(" ")[0] in ("GET", "POST", "PUT", "DELETE")
    )


def access_token(s: Stack, connection_id: int) -> str:
    assert s.db is not None
    with s.db.session() as session:
        connection = session.get(Connection, connection_id)
        assert connection is not None
        return TokenCipher(s.settings.TOKEN_ENCRYPTION_KEYS).decrypt(
            connection.access_token_enc or ""
        )


def run_naive(s: Stack, pairs: list[tuple[str, int]], parallel: int) -> tuple[float, int, int]:
    """(seconds, writes, 429s) for naive syncs of these (account, connection) pairs."""
    api = s.settings.close_url("CLOSE_API_URL")
    tokens = {cid: access_token(s, cid) for _, cid in pairs}

    def one(pair: tuple[str, int]) -> tuple[int, int]:
        result = naive_sync(
            requests.Session(), s.source_url, s.settings.SOURCE_TOKEN, api, tokens[pair[1]], pair[0]
        )
        return result.writes, result.rate_limited

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        outcomes = list(pool.map(one, pairs))
    return time.monotonic() - started, sum(o[0] for o in outcomes), sum(o[1] for o in outcomes)


# Scenarios ------------------------------------------------------------------------------


def initial_one(quick: bool) -> dict[str, Any]:
    n = 40 if quick else 1000
    rate = 20.0
    with stack(latency_ms=40, rate_per_token=rate) as s:
        accounts = {
            "bench-one": generated_event_types("bench-one", n),
            "naive-one": generated_event_types("naive-one", n),
        }
        s.write_source(accounts)
        ids = s.create_connections(
            [("bench-one", "u_one", "o_one"), ("naive-one", "u_naive", "o_naive")]
        )
        s.start_workers(1, threads=4)
        enqueue = celery_enqueue(s.settings)
        since = s.max_run_id()
        s.sandbox("/_sandbox/reset-calls")
        started = time.monotonic()
        enqueue(ids["bench-one"], "manual", None)
        runs = wait_runs(s, since, 1, timeout=600)
        ours = time.monotonic() - started
        ours_429 = s.calls().get("429", 0)
        assert runs and runs[0].created == n, (
            runs[0].status if runs else None,
            runs[0].error if runs else None,
        )
        s.sandbox("/_sandbox/reset-calls")
        base_time, base_writes, base_429 = run_naive(s, [("naive-one", ids["naive-one"])], 1)
    bound = n / rate
    return {
        "params": {"event_types": n, "latency_ms": 40, "limit_per_token": rate},
        "ours": {
            "seconds": round(ours, 2),
            "fraction_of_bound": round(ours / bound, 3),
            "429s": ours_429,
        },
        "baseline": {"seconds": round(base_time, 2), "429s": base_429, "writes": base_writes},
        "bound_seconds": bound,
        "ratio": round(base_time / ours, 2),
        "target": "<= 1.15 x bound, a handful of 429s",
        "pass": ours <= 1.15 * bound and ours_429 <= 5,
    }


def fleet(quick: bool) -> dict[str, dict[str, Any]]:
    """Fleet initial sync, then no-change resyncs (with and without ETags), then one change
    per account; one stack for all four."""
    connections, per, orgs = (40, 10, 4) if quick else (500, 20, 50)
    sample = 4 if quick else 50
    with stack(latency_ms=40, rate_per_token=20, rate_per_org=60) as s:
        accounts = {
            f"fleet-{i}": generated_event_types(f"fleet-{i}", per, seed=i)
            for i in range(connections)
        }
        s.write_source(accounts)
        specs = [(f"fleet-{i}", f"u_fleet_{i}", f"o_fleet_{i % orgs}") for i in range(connections)]
        ids = s.create_connections(specs)
        s.start_workers(2, threads=8)
        enqueue = celery_enqueue(s.settings)
        total_links = connections * per

        def round_(label: str) -> tuple[float, list[Any], dict[str, int]]:
            since = s.max_run_id()
            s.sandbox("/_sandbox/reset-calls")
            started = time.monotonic()
            started_wall = datetime.now().astimezone()
            for account in accounts:
                enqueue(ids[account], "manual", None)
            runs = wait_runs(s, since, connections, timeout=900)
            elapsed = time.monotonic() - started
            for run in runs:
                run.latency = (run.finished_at - started_wall).total_seconds()
            return elapsed, runs, s.calls()

        elapsed, runs, calls = round_("initial")
        created = sum(r.created for r in runs)
        per_conn = [r.latency for r in runs]
        by_org: dict[str, list[float]] = {}
        org_of = {ids[a]: org for a, _, org in specs}
        for r in runs:
            by_org.setdefault(org_of[r.connection_id], []).append(r.latency)
        org_done = [max(v) for v in by_org.values()]
        # Baseline: the naive loop, two at a time (our worker process count), on a sample.
        sample_pairs = [(a, ids[a]) for a in list(accounts)[:sample]]
        s.sandbox("/_sandbox/reset-calls")
        base_time, base_writes, base_429 = run_naive(s, sample_pairs, 2)
        base_rate = base_writes / base_time
        ours_rate = created / elapsed
        initial = {
            "params": {
                "connections": connections,
                "event_types_each": per,
                "orgs": orgs,
                "latency_ms": 40,
                "limit_per_token": 20,
                "limit_per_org": 60,
                "workers": "2 processes x 8 threads",
                "baseline": f"naive loop, 2 in parallel, on {sample} connections",
            },
            "ours": {
                "links": created,
                "seconds": round(elapsed, 2),
                "links_per_s": round(ours_rate, 1),
                "p50_s": round(pct(per_conn, 50), 2),
                "p99_s": round(pct(per_conn, 99), 2),
                "429s": calls.get("429", 0),
                "slowest_org_s": round(max(org_done), 2),
                "fastest_org_s": round(min(org_done), 2),
            },
            "baseline": {"links_per_s": round(base_rate, 1), "429s": base_429},
            "bound_links_per_s": orgs * 60,
            "ratio": round(ours_rate / base_rate, 2),
            "target": ">= 5 x baseline throughput; no org starves",
            "pass": ours_rate >= 5 * base_rate and created == total_links,
        }

        elapsed_e, _runs_e, calls_e = round_("no-change, ETag")
        assert s.db is not None
        with s.db.session() as session:
            session.execute(update(Connection).values(source_etag=None))
        elapsed_n, _runs_n, calls_n = round_("no-change, no ETag")
        no_change = {
            "params": {"connections": connections, "links": total_links},
            "ours": {
                "with_etag": {
                    "close_calls": close_api_calls(calls_e),
                    "writes": close_writes(calls_e),
                    "seconds": round(elapsed_e, 2),
                },
                "without_etag": {
                    "close_calls": close_api_calls(calls_n),
                    "writes": close_writes(calls_n),
                    "seconds": round(elapsed_n, 2),
                },
            },
            "baseline": {
                "writes": total_links,
                "note": "the naive loop rewrites every link on every sync",
            },
            "ratio": None,
            "target": "0 writes; 0 Close calls with ETags",
            "pass": close_writes(calls_e) == 0
            and close_writes(calls_n) == 0
            and close_api_calls(calls_e) == 0,
        }

        for account in accounts:
            first = accounts[account][0]["id"]
            s.patch_event_type(account, first, name=f"changed {account}")
        elapsed_c, runs_c, calls_c = round_("one change each")
        one_change = {
            "params": {"connections": connections, "changes": connections},
            "ours": {
                "writes": close_writes(calls_c),
                "close_calls": close_api_calls(calls_c),
                "seconds": round(elapsed_c, 2),
                "updated": sum(r.updated for r in runs_c),
            },
            "baseline": {"writes": total_links},
            "ratio": round(total_links / max(close_writes(calls_c), 1), 1),
            "target": f"exactly {connections} writes",
            "pass": close_writes(calls_c) == connections,
        }
    return {
        "fleet_initial": initial,
        "no_change_resync": no_change,
        "one_change_per_account": one_change,
    }


WRK = os.environ.get("BENCH_WRK", "wrk")
WRK_SCRIPT = ROOT / "bench" / "webhooks.lua"


def signed_requests(path: Any, accounts: list[str], count: int) -> None:
    """`count` pre-signed deliveries, one per line ("<signature header>\t<body>"), each with a
    unique event id, cycling through the accounts; signed now (the tolerance is 5 minutes)."""
    from bench.stack import WEBHOOK_SECRET
    from service.api.signatures import sign

    t = int(time.time())
    with open(path, "w") as handle:
        for n in range(count):
            body = json.dumps(
                {
                    "id": uuid.uuid4().hex,
                    "type": "event_types.changed",
                    "account_id": accounts[n % len(accounts)],
                },
                separators=(",", ":"),
            )
            handle.write(f"t={t},v1={sign(WEBHOOK_SECRET, t, body.encode())}\t{body}\n")


def run_wrk(
    s: Stack, url: str, *, threads: int, connections: int, seconds: float, **env: str
) -> dict[str, Any]:
    """wrk against `url`: with env (BENCH_REQUESTS, BENCH_RATE) through the webhook script,
    which writes a JSON summary; without, plain GETs and wrk's own summary parsed."""
    out = s.workdir / f"wrk-{time.monotonic_ns()}.json"
    args = [
        WRK,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "--timeout",
        "5s",
    ]
    if env:
        args += ["-s", str(WRK_SCRIPT)]
    done = subprocess.run(
        [*args, url],
        env={**os.environ, "BENCH_OUT": str(out), "BENCH_THREADS": str(threads), **env},
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    )
    if env:
        return dict(json.loads(out.read_text()))
    rps = next(line for line in done.stdout.splitlines() if line.startswith("Requests/sec:"))
    return {"requests_per_s": float(rps.split()[1]), "stdout": done.stdout}


def webhook_ingest(quick: bool) -> dict[str, Any]:
    """Debian's wrk 4 (compiled, so the generator costs little CPU beside the server) through
    bench/webhooks.lua: (1) throughput at fixed connections, /healthz against the webhook on
    the same gunicorn; (2) a paced run at `rate` requests/s (wrk 4 has no -R: the script's
    delay() keeps a schedule) for the latency target."""
    if shutil.which(WRK) is None:
        raise SystemExit(f"webhook_ingest needs wrk ({WRK!r} not found): apt-get install -y wrk")
    rate, seconds, probe, pairs = (50, 2, 1, 1) if quick else (500, 30, 2, 7)
    threads, connections = 2, 8
    with stack(latency_ms=0, rate_per_token=1000) as s:
        accounts = [f"hook-{i}" for i in range(500)]
        s.create_connections([(a, f"u_{a}", f"o_hooks_{i % 20}") for i, a in enumerate(accounts)])
        web = s.start_web(workers=WEB_WORKERS)
        hook = web + "/webhooks/source"
        # Warm both paths (pool connections, broker connection) outside the measurement.
        warm = s.workdir / "warm.tsv"
        signed_requests(warm, accounts, 200)
        warmed = run_wrk(s, hook, threads=1, connections=4, seconds=1, BENCH_REQUESTS=str(warm))
        # Throughput: `pairs` alternating rounds of /healthz then the webhook, `probe` seconds
        # each, through the same generator (the script, its per-response hook included, in
        # GET mode for /healthz).
        rounds = []
        for n in range(pairs):
            health = run_wrk(
                s,
                web + "/healthz",
                threads=threads,
                connections=connections,
                seconds=probe,
                BENCH_REQUESTS="",
            )
            batch = s.workdir / f"fixed-{n}.tsv"
            signed_requests(batch, accounts, 3000 * probe)
            fixed = run_wrk(
                s,
                hook,
                threads=threads,
                connections=connections,
                seconds=probe,
                BENCH_REQUESTS=str(batch),
            )
            rounds.append((health, fixed))
        paced_file = s.workdir / "paced.tsv"
        signed_requests(paced_file, accounts, int(rate * seconds * 1.2))
        paced = run_wrk(
            s,
            hook,
            threads=threads,
            connections=64,
            seconds=seconds,
            BENCH_REQUESTS=str(paced_file),
            BENCH_RATE=str(rate),
        )
        assert s.db is not None
        with s.db.session() as session:
            stored = int(session.scalar(text("SELECT count(*) FROM webhook_deliveries")) or 0)
    fixed_runs = [fixed for _, fixed in rounds]
    accepted = sum(f["accepted"] for f in fixed_runs) + paced["accepted"] + warmed["accepted"]
    errors = sum(n for st, n in paced["statuses"].items() if st != "202") + paced["socket_errors"]
    for f in fixed_runs:
        errors += sum(n for st, n in f["statuses"].items() if st != "202") + f["socket_errors"]
    health_rps = [h["requests"] / h["duration_s"] for h, _ in rounds]
    hook_rps = [f["requests"] / f["duration_s"] for f in fixed_runs]
    ratios = [w / h for w, h in zip(hook_rps, health_rps, strict=True)]
    # Best of the rounds for each: noise on this shared machine only ever slows a round down
    # (a round of either can lose half its rate to a neighbour), so each side's best round is
    # its own rate most faithfully; the rounds' own ratios are reported beside it.
    ratio = max(hook_rps) / max(health_rps)
    achieved = paced["requests"] / paced["duration_s"]
    p99 = paced["p99_ms"]
    return {
        "params": {
            "rate_per_s": rate,
            "seconds": seconds,
            "generator": f"wrk {threads} threads; {connections} connections for throughput "
            f"({pairs} rounds of {probe} s each, /healthz then webhook; best round of each), "
            "64 paced by the script for latency",
            "gunicorn": f"{WEB_WORKERS} workers (service/gunicorn_conf.py threads)",
            "accounts": len(accounts),
        },
        "ours": {
            "achieved_rate_per_s": round(achieved, 1),
            "p50_ms": round(paced["p50_ms"], 2),
            "p90_ms": round(paced["p90_ms"], 2),
            "p99_ms": round(p99, 2),
            "server_p50_ms": paced["server_p50_ms"],
            "server_p99_ms": paced["server_p99_ms"],
            "webhook_rps_fixed_conns": round(max(hook_rps), 1),
            "webhook_rps_rounds": [round(r) for r in hook_rps],
            "fixed_conns_p99_ms": round(max(f["p99_ms"] for f in fixed_runs), 2),
            "round_ratios": [round(r, 2) for r in ratios],
            "errors": errors,
            "accepted": accepted,
            "duplicates": sum(f["duplicate"] for f in fixed_runs) + paced["duplicate"],
            "stored": stored,
            # wrk stops with requests in flight: those are stored but their 202 is not counted.
            "lost": max(0, accepted - stored),
            "stored_unanswered_at_stop": max(0, stored - accepted),
        },
        "baseline": {
            "healthz_rps_fixed_conns": round(max(health_rps), 1),
            "healthz_rps_rounds": [round(r) for r in health_rps],
            "healthz_server_p99_ms": max(h["server_p99_ms"] for h, _ in rounds),
        },
        "ratio": round(ratio, 2),
        "target": f"p99 < 25 ms at {rate}/s (client, wrk), 0 errors, 0 lost; webhook >= 0.5 x "
        "/healthz throughput",
        "pass": p99 < 25
        and achieved >= 0.95 * rate
        and errors == 0
        and stored >= accepted
        and ratio >= 0.5,
    }


def idle_cpu_percent(procs: list[Any], seconds: float) -> float:
    """CPU used by these processes (and their children) while nothing happens, in % of one core."""
    ps = [psutil.Process(p.pid) for p in procs]

    def cpu() -> float:
        total = 0.0
        for p in ps:
            for q in [p, *p.children(recursive=True)]:
                times = q.cpu_times()
                total += times.user + times.system
        return total

    before = cpu()
    time.sleep(seconds)
    return round((cpu() - before) / seconds * 100, 2)


def webhook_to_close(quick: bool, embedded: bool = False) -> dict[str, Any]:
    if embedded:  # make run's shape: one worker process, SQLite database and broker
        rate, seconds = (5, 2) if quick else (5, 20)
    else:
        rate, seconds = (10, 3) if quick else (20, 20)
    total = rate * seconds
    with stack(latency_ms=40, rate_per_token=20, embedded=embedded) as s:
        accounts = {f"w2c-{i}": generated_event_types(f"w2c-{i}", 5, seed=i) for i in range(total)}
        s.write_source(accounts)
        ids = s.create_connections(
            [(a, f"u_{a}", f"o_w2c_{i % 20}") for i, a in enumerate(accounts)]
        )
        workers = s.start_workers(1, threads=4) if embedded else s.start_workers(2, threads=8)
        enqueue = celery_enqueue(s.settings)
        since = s.max_run_id()
        for account in accounts:
            enqueue(ids[account], "manual", None)
        wait_runs(s, since, total, timeout=300)
        idle_cpu = idle_cpu_percent(workers, 2 if quick else 10) if embedded else None
        web = s.start_web(workers=2)
        from bench.stack import WEBHOOK_SECRET
        from service.api.signatures import sign

        http = requests.Session()
        sent: dict[str, float] = {}
        start = time.monotonic()
        for n, account in enumerate(accounts):
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            name = f"renamed {account}"
            s.patch_event_type(account, accounts[account][0]["id"], name=name)
            body = json.dumps(
                {"id": f"w2c-{n}", "type": "event_types.changed", "account_id": account}
            ).encode()
            t = int(time.time())
            sent[name] = time.time()
            http.post(
                f"{web}/webhooks/source",
                data=body,
                headers={
                    "Content-Type": "application/json",
                    "X-LinkSync-Signature": f"t={t},v1={sign(WEBHOOK_SECRET, t, body)}",
                },
                timeout=10,
            )
        hook_since = s.max_run_id()
        deadline = time.monotonic() + 60
        latencies: list[float] = []
        while time.monotonic() < deadline:
            links = requests.get(s.sandbox_url + "/_sandbox/state", timeout=30).json()["links"]
            changed = {link["name"]: link["date_updated"] for link in links if link["name"] in sent}
            if len(changed) == len(sent):
                latencies = [
                    (datetime.fromisoformat(changed[name]).timestamp() - sent[name]) * 1000
                    for name in sent
                ]
                break
            time.sleep(0.5)
        hook_runs = [
            r for r in s.runs_finished(since) if r.id > hook_since or r.trigger == "webhook"
        ]
        hook_runs = [r for r in hook_runs if r.trigger == "webhook" and r.started_at]
        durations = [(r.finished_at - r.started_at).total_seconds() * 1000 for r in hook_runs]
    p99 = pct(latencies, 99)
    target_ms = 500 if embedded else 2000
    return {
        "params": {
            "changes_per_s": rate,
            "seconds": seconds,
            "distinct_accounts": total,
            "latency_ms": 40,
            "broker": "SQLite (kombu sqla), polled every 0.1 s; SQLite database"
            if embedded
            else "Redis; PostgreSQL",
            "workers": "1 process x 4 threads" if embedded else "2 processes x 8 threads",
        },
        "ours": {
            "changes": len(sent),
            "arrived": len(latencies),
            "p50_ms": round(pct(latencies, 50), 1),
            "p99_ms": round(p99, 1),
            "webhook_runs": len(hook_runs),
            "run_p50_ms": round(pct(durations, 50), 1),
            **({"idle_worker_cpu_percent": idle_cpu} if embedded else {}),
        },
        "baseline": {
            "note": "a naive integration syncs on its schedule only: up to SYNC_INTERVAL_SECONDS (900 s)"
        },
        "ratio": None,
        "target": f"p99 < {target_ms / 1000:g} s",
        "pass": len(latencies) == len(sent) and p99 < target_ms,
    }


def scheduler_tick(quick: bool) -> dict[str, Any]:
    sizes = (100, 1000) if quick else (1000, 10000)
    rows: dict[str, Any] = {}
    with stack(latency_ms=0) as s:
        svc = Services(s.settings, enqueue=lambda *_: None)
        assert s.db is not None
        for size in sizes:
            with s.db.session() as session:
                session.execute(text("DELETE FROM connections"))
                session.execute(
                    text(
                        "INSERT INTO connections (account_id, status, token_generation, next_sync_at, "
                        "next_reconcile_at, created_at, updated_at) SELECT 'tick-' || g, 'active', 1, "
                        "now() - interval '1 second' + (g % :tick) * interval '1 millisecond', now() + interval '1 day', now(), now() "
                        "FROM generate_series(1, :n) g"
                    ),
                    {"n": size, "tick": 1000},
                )
            statements: list[str] = []

            def count(
                _c: Any, _cur: Any, statement: str, *_a: Any, seen: list[str] = statements
            ) -> None:
                seen.append(statement)

            event.listen(svc.db.engine, "before_cursor_execute", count)
            started = time.perf_counter()
            due = due_connections(svc)
            elapsed = time.perf_counter() - started
            event.remove(svc.db.engine, "before_cursor_execute", count)
            rows[str(size)] = {
                "due": len(due),
                "statements": len(statements),
                "ms": round(elapsed * 1000, 1),
            }
        svc.close()
    small, large = rows[str(sizes[0])], rows[str(sizes[1])]
    return {
        "params": {"due_connections": list(sizes), "batch_limit": 5000},
        "ours": rows,
        "baseline": {
            "statements": {str(n): n + 1 for n in sizes},
            "note": "one UPDATE per connection",
        },
        "ratio": None,
        "target": "constant number of SQL statements per tick",
        "pass": small["statements"] == large["statements"],
    }


def worker_memory(quick: bool) -> dict[str, Any]:
    n = 1000 if quick else 10000
    with stack(latency_ms=0, rate_per_token=5000) as s:
        s.write_source({"mem": generated_event_types("mem", n)})
        ids = s.create_connections([("mem", "u_mem", "o_mem")])
        [worker] = s.start_workers(1, threads=2)
        proc = psutil.Process(worker.pid)
        peak = [0]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.05):
                try:
                    rss = proc.memory_info().rss + sum(
                        c.memory_info().rss for c in proc.children(recursive=True)
                    )
                except psutil.Error:
                    continue
                peak[0] = max(peak[0], rss)

        baseline_rss = proc.memory_info().rss
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        since = s.max_run_id()
        started = time.monotonic()
        celery_enqueue(s.settings)(ids["mem"], "manual", None)
        runs = wait_runs(s, since, 1, timeout=600)
        elapsed = time.monotonic() - started
        stop.set()
        sampler.join()
    mb = peak[0] / 2**20
    return {
        "params": {
            "event_types": n,
            "sandbox_rate_limit_per_s": 5000,
            "note": "rate limit raised so the run is short",
        },
        "ours": {
            "peak_rss_mb": round(mb, 1),
            "idle_rss_mb": round(baseline_rss / 2**20, 1),
            "seconds": round(elapsed, 2),
            "created": runs[0].created if runs else 0,
        },
        "baseline": None,
        "ratio": None,
        "target": "< 300 MB",
        "pass": mb < 300 and bool(runs) and runs[0].created == n,
    }


def events_latency(quick: bool) -> dict[str, Any]:
    """Change -> event received by the integrator's receiver (bench/events_latency.py)."""
    return measure_events_latency(20 if quick else 200)


def team_org(quick: bool) -> dict[str, Any]:
    """A team org: every member's own connection (3 personal types each, 5 managed types
    assigned to everyone) and the admin's shared links with one mapping per member and type,
    all under one org budget. Members sync first (enqueued at once); each member's run asks
    for the admin's coalesced run, which maps them to their own links. Done when every member
    run finished and every mapping targets the member's own link. The bound is the Close
    writes made divided by the per-org rate; then a no-change resync of every connection."""
    from bench import team

    members, personal_each, managed = (5, 3, 5) if quick else (200, 3, 5)
    rate_token, rate_org = 20.0, 60.0
    account = "bench-team"
    with stack(latency_ms=40, rate_per_token=rate_token, rate_per_org=rate_org) as s:
        items, roster = team.team_source(account, members, personal_each, managed)
        team.write_team_source(s, account, items, roster)
        admin, member_conns = team.create_team_connections(s, account, members)
        s.start_workers(2, threads=8)
        enqueue = celery_enqueue(s.settings)
        since = s.max_run_id()
        s.sandbox("/_sandbox/reset-calls")
        started = time.monotonic()
        for cid in member_conns:
            enqueue(cid, "manual", None)
        deadline = time.monotonic() + (120 if quick else 900)
        expected_maps = members * managed
        while time.monotonic() < deadline:
            done = [r for r in s.runs_finished(since) if r.connection_id != admin]
            if (
                len(done) >= members
                and team.mapped_to_user_links(s, account) >= expected_maps
                and team.active_runs(s) == 0
            ):
                break
            time.sleep(0.1)
        ours = time.monotonic() - started
        runs = s.runs_finished(since)
        calls = s.calls()
        writes = team.team_writes(calls)
        admin_runs = [r for r in runs if r.connection_id == admin]
        member_runs = [r for r in runs if r.connection_id != admin]
        ideal = members * (personal_each + managed) + managed + expected_maps
        complete = team.mapped_to_user_links(s, account) >= expected_maps and sum(
            r.created for r in member_runs
        ) == members * (personal_each + managed)
        # No change anywhere: every connection resyncs, and Close gets no write.
        time.sleep(1.0)
        since = s.max_run_id()
        s.sandbox("/_sandbox/reset-calls")
        resync_started = time.monotonic()
        for cid in [*member_conns, admin]:
            enqueue(cid, "manual", None)
        wait_runs(s, since, members + 1, timeout=300)
        resync = time.monotonic() - resync_started
        resync_writes = team.team_writes(s.calls())
    bound = writes / rate_org
    return {
        "params": {
            "members": members,
            "personal_per_member": personal_each,
            "managed_types": managed,
            "latency_ms": 40,
            "limit_per_token": rate_token,
            "limit_per_org": rate_org,
        },
        "ours": {
            "seconds": round(ours, 2),
            "close_writes": writes,
            "minimal_writes": ideal,
            "fraction_of_bound": round(ours / bound, 3) if bound else None,
            "429s": calls.get("429", 0),
            "admin_runs": len(admin_runs),
            "member_runs": len(member_runs),
            "complete": complete,
            "no_change_resync": {"seconds": round(resync, 2), "writes": resync_writes},
        },
        "baseline": None,
        "bound_seconds": round(bound, 2),
        "ratio": None,
        "target": "initial <= 1.15 x (Close writes / per-org rate); no-change resync 0 writes",
        "pass": complete and ours <= 1.15 * bound and resync_writes == 0,
    }


def peak_rss_sampler(procs: list[Any]) -> tuple[Callable[[], dict[int, int]], threading.Event]:
    """Sample each process's RSS (with its children) every 50 ms; returns (peaks, stop)."""
    ps = {p.pid: psutil.Process(p.pid) for p in procs}
    peaks = dict.fromkeys(ps, 0)
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            for pid, proc in ps.items():
                try:
                    rss = proc.memory_info().rss + sum(
                        c.memory_info().rss for c in proc.children(recursive=True)
                    )
                except psutil.Error:
                    continue
                peaks[pid] = max(peaks[pid], rss)

    threading.Thread(target=sample, daemon=True).start()
    return lambda: dict(peaks), stop


def overlapping_runs(runs: list[Any]) -> int:
    """How many runs (of one connection) started before the previous one had finished."""
    spans = sorted((r.started_at, r.finished_at) for r in runs if r.started_at)
    return sum(1 for a, b in itertools.pairwise(spans) if b[0] < a[1])


def wait_quiet(s: Stack, connection_id: int, timeout: float) -> None:
    """Until the broker holds no task (queued or delivered-unacknowledged, e.g. a busy retry
    waiting for its countdown) and no run of the connection is unfinished."""
    r = redis_client(s)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert s.db is not None
        with s.db.session() as session:
            open_runs = session.scalar(
                text(
                    "SELECT count(*) FROM sync_runs WHERE connection_id = :c AND "
                    "finished_at IS NULL AND status IN ('queued', 'running')"
                ),
                {"c": connection_id},
            )
        if not open_runs and not r.llen("celery") and not r.hlen("unacked"):
            return
        time.sleep(0.2)


def redis_client(s: Stack) -> Any:
    import redis

    return redis.Redis.from_url(s.settings.REDIS_URL or "")


def time_source_listing(s: Stack, account: str) -> float:
    """Seconds to read every page of the account's event types straight from the source."""
    http = requests.Session()
    headers = {"Authorization": f"Bearer {s.settings.SOURCE_TOKEN}"}
    started = time.monotonic()
    cursor = None
    while True:
        page = http.get(
            f"{s.source_url}/accounts/{account}/event-types",
            params={"cursor": cursor} if cursor else {},
            headers=headers,
            timeout=60,
        ).json()
        cursor = page.get("next_cursor")
        if not cursor:
            return round(time.monotonic() - started, 2)


def big_account(quick: bool) -> dict[str, Any]:
    """One account with 10,000 event types: the initial sync against the rate-limit bound
    (sandbox and CLOSE_RATE_PER_SECOND at 200/s per token, to fit the time budget), the
    workers' peak RSS, a no-change resync (0 Close writes, at most one source listing), and a
    run longer than the broker's visibility timeout (redelivered mid-run: never two at once,
    no confirmed write repeated)."""
    # 100/s, not 200/s: one sync runs in one worker process, and at 200/s it measured that
    # process's CPU (about 90 links/s on this machine), not the pacing against the limit.
    n, rate, visibility = (300, 100.0, 1) if quick else (10000, 100.0, 10)
    lock_ttl = 5 if quick else 10  # heartbeats keep it across the run; busy retries at TTL/2
    page = 100  # the demo source's page size
    with stack(
        latency_ms=20,
        rate_per_token=rate,
        close_concurrency=16,
        extra_env={
            "BENCH_VISIBILITY_TIMEOUT": str(visibility),
            "SYNC_LOCK_TTL_SECONDS": str(lock_ttl),
        },
    ) as s:
        s.write_source({"big": generated_event_types("big", n)})
        ids = s.create_connections([("big", "u_big", "o_big")])
        cid = ids["big"]
        workers = s.start_workers(2, threads=4, app="bench.worker_app")
        peaks, stop = peak_rss_sampler(workers)
        idle = max(psutil.Process(w.pid).memory_info().rss for w in workers)
        enqueue = celery_enqueue(s.settings)
        since = s.max_run_id()
        s.sandbox("/_sandbox/reset-calls")
        s.reset_source_stats()
        started = time.monotonic()
        cpu_before = cpu_seconds(workers)
        enqueue(cid, "manual", None)
        first = wait_runs(s, since, 1, timeout=900)
        elapsed = time.monotonic() - started
        worker_cpu = cpu_seconds(workers) - cpu_before
        assert first, "the initial sync did not finish"
        wait_quiet(s, cid, timeout=300)
        stop.set()
        from bench.stack import SYNC_DELIVERIES_KEY

        task_starts = int(redis_client(s).get(SYNC_DELIVERIES_KEY) or 0)
        initial_runs = s.runs_finished(since)
        calls = s.calls()
        initial_source = s.source_stats()
        # No-change resync (the stored ETag: one 304 and nothing else).
        since2 = s.max_run_id()
        s.sandbox("/_sandbox/reset-calls")
        s.reset_source_stats()
        started2 = time.monotonic()
        enqueue(cid, "manual", None)
        wait_runs(s, since2, 1, timeout=300)
        elapsed2 = time.monotonic() - started2
        wait_quiet(s, cid, timeout=120)
        calls2 = s.calls()
        source2 = s.source_stats()
        assert s.db is not None
        with s.db.session() as session:
            first_write, last_write = session.execute(
                text("SELECT min(updated_at), max(updated_at) FROM synced_links")
            ).one()
        listing = time_source_listing(s, "big")
        close_links = len(
            [
                link
                for link in requests.get(s.sandbox_url + "/_sandbox/state", timeout=60).json()[
                    "links"
                ]
                if link.get("source_id")
            ]
        )
    bound = n / rate
    writes = close_writes(calls)
    peak_mb = max(peaks().values()) / 2**20
    pages = -(-n // page)
    listings2 = source2.get("304", 0) + -(-source2.get("200", 0) // pages)
    run0 = first[0]
    return {
        "params": {
            "event_types": n,
            "limit_per_token": rate,
            "CLOSE_RATE_PER_SECOND": rate,
            "latency_ms": 20,
            "CLOSE_CONCURRENCY": 16,
            "visibility_timeout_s": visibility,
            "SYNC_LOCK_TTL_SECONDS": lock_ttl,
            "workers": "2 processes x 4 threads",
            "note": "sandbox at 100/s per token (not Close's 20) so the row fits the time "
            "budget; bench.worker_app sets the visibility timeout and makes kombu look for "
            "overdue tasks every second",
        },
        "ours": {
            "seconds": round(elapsed, 2),
            "fraction_of_bound": round(elapsed / bound, 3),
            "created": run0.created,
            "429s": calls.get("429", 0),
            "close_writes": writes,
            "close_links": close_links,
            "run_seconds": round((run0.finished_at - run0.started_at).total_seconds(), 2),
            # From the first link saved to the last: the paced part, against the same bound.
            "apply_seconds": round((last_write - first_write).total_seconds(), 2),
            "apply_fraction_of_bound": round((last_write - first_write).total_seconds() / bound, 3),
            # The demo source alone, listed directly: it hashes the whole listing for the
            # ETag on every page, so its pages get slower as the account grows.
            "source_listing_seconds": listing,
            "worker_cpu_ms_per_link": round(worker_cpu / max(n, 1) * 1000, 2),
            "sync_task_starts": task_starts,
            "runs": len(initial_runs),
            "redelivered": task_starts > 1,
            "overlapping_runs": overlapping_runs(initial_runs),
            "initial_source_requests": initial_source,
            "peak_rss_mb": round(peak_mb, 1),
            "idle_rss_mb": round(idle / 2**20, 1),
            "resync_seconds": round(elapsed2, 2),
            "resync_close_writes": close_writes(calls2),
            "resync_close_calls": close_api_calls(calls2),
            "resync_source_requests": source2,
            "resync_source_listings": listings2,
        },
        "baseline": None,
        "bound_seconds": bound,
        "ratio": None,
        "target": "<= 1.10 x bound; peak RSS < 300 MB; no-change resync 0 writes and <= 1 "
        "source listing; redelivered mid-run: never two runs at once, Close writes == links",
        "pass": elapsed <= 1.10 * bound
        and run0.created == n
        and peak_mb < 300
        and close_writes(calls2) == 0
        and listings2 <= 1
        and overlapping_runs(initial_runs) == 0
        and writes == n
        and close_links == n
        and (quick or task_starts > 1),
    }


def key_pattern(key: str) -> str:
    """A Redis key with its ids replaced by `*` (`linksync:sync:42` -> `linksync:sync:*`)."""
    import re

    return re.sub(r"(?<=:)[^:]*\d[^:]*(?=:|$)", "*", key)


def redis_memory(s: Stack, connections: int) -> dict[str, Any]:
    """Every key the stack's Redis db holds, grouped by pattern: count and MEMORY USAGE."""
    r = redis_client(s)
    groups: dict[str, dict[str, int]] = {}
    for key in r.scan_iter(count=1000):
        name = key.decode()
        group = groups.setdefault(key_pattern(name), {"keys": 0, "bytes": 0})
        group["keys"] += 1
        group["bytes"] += int(r.memory_usage(key, samples=0) or 0)
    # Keys named after a connection or its token (locks, flags, per-token rate buckets) grow
    # with N; org buckets grow with the orgs; Celery's own keys are fixed.
    per_connection = {
        p: g for p, g in groups.items() if ":rl:org:" not in p and p.startswith("linksync:")
    }
    total = sum(g["bytes"] for g in per_connection.values())
    return {
        "connections": connections,
        "keys": groups,
        "per_connection_keys": round(
            sum(g["keys"] for g in per_connection.values()) / connections, 2
        ),
        "bytes_per_connection": round(total / connections),
        "used_memory_bytes": int(r.info("memory")["used_memory"]),
    }


def timed_requests(
    urls: list[str], headers: dict[str, str], threads: int
) -> tuple[list[float], list[float], dict[int, int]]:
    """GET each url through a small thread pool: (client ms, server ms, statuses)."""
    local = threading.local()
    statuses: dict[int, int] = {}

    def one(url: str) -> tuple[float, float]:
        http = getattr(local, "http", None) or requests.Session()
        local.http = http
        started = time.perf_counter()
        response = http.get(url, headers=headers, timeout=30)
        client = (time.perf_counter() - started) * 1000
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        timing = response.headers.get("Server-Timing", "app;dur=nan")
        return client, float(timing.split("dur=")[1].split(",")[0])

    with ThreadPoolExecutor(max_workers=threads) as pool:
        out = list(pool.map(one, urls))
    return [o[0] for o in out], [o[1] for o in out], statuses


def explain(s: Stack, run: Callable[[Any], Any]) -> list[dict[str, Any]]:
    """EXPLAIN ANALYZE every statement `run(session)` executes, with its real parameters."""
    assert s.db is not None
    captured: list[tuple[str, Any]] = []

    def capture(_c: Any, _cur: Any, statement: str, params: Any, *_a: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            captured.append((statement, params))

    event.listen(s.db.engine, "before_cursor_execute", capture)
    try:
        with s.db.session() as session:
            run(session)
    finally:
        event.remove(s.db.engine, "before_cursor_execute", capture)
    plans = []
    raw = s.db.engine.raw_connection()
    try:
        cursor = raw.cursor()
        for statement, params in captured:
            cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, params)
            plan = cursor.fetchone()[0][0]
            nodes: list[str] = []

            def walk(node: dict[str, Any], out: list[str] = nodes) -> None:
                out.append(
                    f"{node['Node Type']}"
                    + (f" on {node['Relation Name']}" if "Relation Name" in node else "")
                    + (f" using {node['Index Name']}" if "Index Name" in node else "")
                )
                for child in node.get("Plans", []):
                    walk(child)

            walk(plan["Plan"])
            plans.append(
                {
                    "sql": " ".join(statement.split())[:160],
                    "ms": round(plan["Execution Time"], 2),
                    "nodes": nodes,
                }
            )
        raw.rollback()
    finally:
        raw.close()
    return plans


def one_machine(quick: bool) -> dict[str, Any]:
    """What one machine holds: 100,000 connections in PostgreSQL (synthetic rows, 10 links
    each for 10,000 of them, 3 runs each), the scheduler tick, the read endpoints through
    gunicorn and the dashboard query at that size; and Redis bytes per synced connection."""
    n, with_links, fleet_n = (2000, 200, 10) if quick else (100_000, 10_000, 200)
    requests_each, threads = (40, 2) if quick else (300, 4)
    from service.connections import queries
    from service.infra.db import utcnow

    with stack(latency_ms=0, rate_per_token=1000) as s:
        assert s.db is not None
        # Redis per connection: a small fleet really synced, then every key it left.
        accounts = {f"rm-{i}": generated_event_types(f"rm-{i}", 5, seed=i) for i in range(fleet_n)}
        s.write_source(accounts)
        ids = s.create_connections(
            [(a, f"u_{a}", f"o_rm_{i % 10}") for i, a in enumerate(accounts)]
        )
        workers = s.start_workers(1, threads=8)
        since = s.max_run_id()
        enqueue = celery_enqueue(s.settings)
        for account in accounts:
            enqueue(ids[account], "manual", None)
        synced = wait_runs(s, since, fleet_n, timeout=300)
        # ... and one webhook each (no Redis key of its own: it wakes a worker), through gunicorn.
        web = s.start_web(workers=WEB_WORKERS)
        since_hooks = s.max_run_id()
        hooks = s.workdir / "hooks.tsv"
        signed_requests(hooks, list(accounts), fleet_n)
        http = requests.Session()
        for line in hooks.read_text().splitlines():
            signature, body = line.split("\t", 1)
            http.post(
                web + "/webhooks/source",
                data=body,
                headers={"Content-Type": "application/json", "X-LinkSync-Signature": signature},
                timeout=30,
            ).raise_for_status()
        hooked = wait_runs(s, since_hooks, fleet_n, timeout=300)
        s.stop_procs(workers)
        memory = redis_memory(s, fleet_n)
        memory["runs_synced"] = len(synced)
        memory["webhook_runs"] = len(hooked)
        memory["note"] = (
            "measured right after the fleet's syncs and one webhook each: locks and flags are "
            "gone once a run ends; the per-token rate buckets expire after an hour (a webhook "
            "keeps no key: its flood limit is counted in the database)"
        )

        # The synthetic fleet: phases spread over the interval, as the scheduler leaves them.
        interval = s.settings.SYNC_INTERVAL_SECONDS
        started = time.monotonic()
        with s.db.session() as session:
            session.execute(
                text(
                    "INSERT INTO connections (account_id, status, close_user_id, close_org_id, "
                    "token_generation, next_sync_at, next_reconcile_at, last_sync_at, "
                    "last_sync_status, connected_at, created_at, updated_at) "
                    "SELECT 'om-' || g, CASE WHEN g % 20 = 0 THEN 'needs_reauth' "
                    "WHEN g % 50 = 1 THEN 'paused' ELSE 'active' END, 'u_om_' || g, "
                    "'o_om_' || (g % 5000), 1, now() + (g % :interval) * interval '1 second', "
                    "now() + interval '1 day', now() - interval '10 minutes', 'succeeded', "
                    "now() - interval '30 days', now(), now() FROM generate_series(1, :n) g"
                ),
                {"n": n, "interval": interval},
            )
            session.execute(
                text(
                    "INSERT INTO synced_links (connection_id, source_id, name, url, content_hash, "
                    "close_link_id, state, last_error, last_synced_at, updated_at) "
                    "SELECT c.id, 'evt_' || k, 'Event ' || k, 'https://book.example.com/' || "
                    "c.account_id || '/' || k, md5(c.account_id || k), 'schedlink_' || c.id || '_' || k, "
                    "CASE WHEN k = 10 AND c.id % 7 = 0 THEN 'error' ELSE 'synced' END, "
                    "CASE WHEN k = 10 AND c.id % 7 = 0 THEN 'Close said 400' END, now(), now() "
                    "FROM connections c CROSS JOIN generate_series(1, 10) k "
                    "WHERE c.account_id LIKE 'om-%' AND c.id <= "
                    "(SELECT min(id) FROM connections WHERE account_id LIKE 'om-%') + :m - 1"
                ),
                {"m": with_links},
            )
            session.execute(
                text(
                    "INSERT INTO sync_runs (connection_id, trigger, status, queued_at, started_at, "
                    "finished_at, created, updated, deleted, unchanged, failed, progress_total, "
                    "progress_done) SELECT c.id, 'schedule', 'succeeded', "
                    "now() - (k * 900 + c.id % 900) * interval '1 second', "
                    "now() - (k * 900 + c.id % 900) * interval '1 second', "
                    "now() - (k * 900 + c.id % 900 - 1) * interval '1 second', 0, 0, 0, 10, 0, 10, 10 "
                    "FROM connections c CROSS JOIN generate_series(0, 2) k "
                    "WHERE c.account_id LIKE 'om-%'"
                )
            )
            # Some in flight, as the dashboard would see during a busy minute.
            session.execute(
                text(
                    "INSERT INTO sync_runs (connection_id, trigger, status, queued_at, started_at, "
                    "created, updated, deleted, unchanged, failed, progress_total, progress_done) "
                    "SELECT c.id, 'schedule', CASE WHEN c.id % 10 = 0 THEN 'running' ELSE 'queued' END, "
                    "now(), CASE WHEN c.id % 10 = 0 THEN now() END, 0, 0, 0, 0, 0, 10, 3 "
                    "FROM connections c WHERE c.account_id LIKE 'om-%' ORDER BY c.id LIMIT 300"
                )
            )
            # A team on om-1: 30 members, 10 of them connected with 5 links each.
            session.execute(
                text(
                    "INSERT INTO team_members (account_id, member_id, email, name, close_user_id, "
                    "close_user_name) SELECT 'om-1', 'mem-' || g, 'm' || g || '@example.com', "
                    "'Member ' || g, CASE WHEN g <= 20 THEN 'u_mem_' || g END, "
                    "CASE WHEN g <= 20 THEN 'Member ' || g END FROM generate_series(1, 30) g"
                )
            )
            session.execute(
                text(
                    "INSERT INTO connections (account_id, member_id, status, close_user_id, "
                    "close_org_id, token_generation, next_sync_at, created_at, updated_at) "
                    "SELECT 'om-1', 'mem-' || g, 'active', 'u_mem_' || g, 'o_om_1', 1, "
                    "now() + interval '1 hour', now(), now() FROM generate_series(1, 10) g"
                )
            )
            session.execute(
                text(
                    "INSERT INTO synced_links (connection_id, source_id, name, url, content_hash, "
                    "state, updated_at) SELECT c.id, 'evt_' || k || ':' || c.member_id, 'Own ' || k, "
                    "'https://book.example.com/' || c.member_id || '/' || k, md5(c.member_id || k), "
                    "'synced', now() FROM connections c CROSS JOIN generate_series(1, 5) k "
                    "WHERE c.account_id = 'om-1' AND c.member_id IS NOT NULL"
                )
            )
            sizes = {
                table: int(session.scalar(text(f"SELECT count(*) FROM {table}")) or 0)
                for table in ("connections", "synced_links", "sync_runs", "team_members")
            }
        # What autovacuum would have done to tables this old: statistics and the visibility
        # map (without it no count can be an index-only scan).
        with s.db.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))
        load_seconds = time.monotonic() - started

        # The scheduler tick: steady state (phases spread) and a backlog (everything overdue).
        svc = Services(s.settings, enqueue=lambda *_: None)
        tick: dict[str, Any] = {}
        for label in ("steady", "backlog"):
            if label == "backlog":
                with s.db.session() as session:
                    session.execute(
                        text("UPDATE connections SET next_sync_at = now() - interval '1 hour'")
                    )
                with s.db.engine.connect() as conn:
                    conn.execution_options(isolation_level="AUTOCOMMIT").execute(
                        text("VACUUM ANALYZE connections")
                    )
            statements: list[str] = []

            def count(
                _c: Any, _cur: Any, statement: str, *_a: Any, seen: list[str] = statements
            ) -> None:
                seen.append(statement)

            event.listen(svc.db.engine, "before_cursor_execute", count)
            t0 = time.perf_counter()
            due = due_connections(svc)
            elapsed = time.perf_counter() - t0
            event.remove(svc.db.engine, "before_cursor_execute", count)
            tick[label] = {
                "due": len(due),
                "statements": len(statements),
                "ms": round(elapsed * 1000, 1),
            }
        svc.close()

        # The read endpoints through gunicorn.
        from bench.stack import API_KEY

        headers = {"Authorization": f"Bearer {API_KEY}"}
        rng = __import__("random").Random(7)
        linked = [f"om-{rng.randint(1, with_links)}" for _ in range(requests_each)]
        endpoints = {
            "status": [f"{web}/api/v1/accounts/{a}/connection" for a in linked],
            "links": [f"{web}/api/v1/accounts/{a}/links" for a in linked],
            "coverage": [
                f"{web}/api/v1/accounts/{'om-1' if i % 2 else a}/coverage"
                for i, a in enumerate(linked)
            ],
        }
        for urls in endpoints.values():  # warm the pools and each endpoint's first use
            timed_requests(urls[:20], headers, threads)
        api: dict[str, Any] = {}
        for name, urls in endpoints.items():
            client, server, statuses = timed_requests(urls, headers, threads)
            api[name] = {
                "requests": len(urls),
                "statuses": statuses,
                "client_p50_ms": round(pct(client, 50), 2),
                "client_p99_ms": round(pct(client, 99), 2),
                "server_p50_ms": round(pct(server, 50), 2),
                "server_p99_ms": round(pct(server, 99), 2),
            }
        # The dashboard's activity query (polled every 2 s by every open console).
        activity: list[float] = []
        for _ in range(20 if quick else 100):
            with s.db.session() as session:
                t0 = time.perf_counter()
                queries.fleet_activity(session, utcnow())
                activity.append((time.perf_counter() - t0) * 1000)
        plans = {
            "fleet_activity": explain(s, lambda session: queries.fleet_activity(session, utcnow())),
            "status": explain(
                s,
                lambda session: queries.link_counts(
                    session, queries.get_connection(session, "om-7").id
                ),
            ),
            "links": explain(
                s,
                lambda session: queries.links_page(
                    session, queries.get_connection(session, "om-7").id, after_id=0, limit=100
                ),
            ),
            "coverage": explain(s, lambda session: queries.coverage(session, "om-1")),
        }
    # The endpoints' own time (Server-Timing) is what the table size can affect; the client's
    # p99 (4 Python threads on the same 2 cores as gunicorn and PostgreSQL) is reported beside.
    api_ok = all(a["server_p99_ms"] < 50 and set(a["statuses"]) == {200} for a in api.values())
    return {
        "params": {
            "connections": sizes["connections"],
            "synced_links": sizes["synced_links"],
            "sync_runs": sizes["sync_runs"],
            "team_members": sizes["team_members"],
            "load_seconds": round(load_seconds, 1),
            "api": f"gunicorn {WEB_WORKERS} workers; {requests_each} requests per endpoint, "
            f"{threads} client threads, random accounts with 10 links",
            "redis_fleet": f"{fleet_n} connections x 5 links synced, {10} orgs",
        },
        "ours": {
            "tick": tick,
            "api": api,
            "fleet_activity_p50_ms": round(pct(activity, 50), 2),
            "fleet_activity_p99_ms": round(pct(activity, 99), 2),
            "redis": memory,
            "explain": plans,
        },
        "baseline": None,
        "ratio": None,
        "target": "tick: constant statements, < 1 s; status, links, coverage p99 < 50 ms "
        "(server); the dashboard query is reported, not a target",
        "pass": tick["steady"]["statements"] == tick["backlog"]["statements"]
        and all(t["ms"] < 1000 for t in tick.values())
        and api_ok,
    }


def cpu_seconds(procs: list[Any]) -> float:
    total = 0.0
    for proc in procs:
        try:
            p = psutil.Process(proc.pid)
            for q in [p, *p.children(recursive=True)]:
                times = q.cpu_times()
                total += times.user + times.system
        except psutil.Error:
            continue
    return total


def scale_out(quick: bool) -> dict[str, Any]:
    """The fleet's initial sync with 1, 2 and 4 worker processes (8 threads each) on one Redis
    and PostgreSQL: links/s per process count beside the two bounds, Close's budget (orgs x
    per-org rate) and the CPU (2 cores / the workers' CPU seconds per link)."""
    connections, per, orgs = (12, 5, 3) if quick else (200, 20, 20)
    per_token, per_org = 20.0, 60.0
    counts, threads = (1, 2, 4), 8
    cores = psutil.cpu_count() or 1
    rounds: dict[str, Any] = {}
    with stack(latency_ms=40, rate_per_token=per_token, rate_per_org=per_org) as s:
        everything: dict[str, list[dict[str, Any]]] = {}
        specs: dict[int, list[tuple[str, str, str]]] = {}
        for procs in counts:
            # Fresh accounts, users and orgs per round: nothing in Close, fresh org budgets.
            specs[procs] = [
                (f"so{procs}-{i}", f"u_so{procs}_{i}", f"o_so{procs}_{i % orgs}")
                for i in range(connections)
            ]
            for account, _, _ in specs[procs]:
                everything[account] = generated_event_types(account, per, seed=len(everything))
        s.write_source(everything)
        ids = s.create_connections([spec for procs in counts for spec in specs[procs]])
        enqueue = celery_enqueue(s.settings)
        for procs in counts:
            workers = s.start_workers(procs, threads=threads)
            since = s.max_run_id()
            s.sandbox("/_sandbox/reset-calls")
            psutil.cpu_percent()
            cpu_before = cpu_seconds(workers)
            started = time.monotonic()
            for account, _, _ in specs[procs]:
                enqueue(ids[account], "manual", None)
            runs = wait_runs(s, since, connections, timeout=900)
            elapsed = time.monotonic() - started
            machine = psutil.cpu_percent()
            worker_cpu = cpu_seconds(workers) - cpu_before
            calls = s.calls()
            s.stop_procs(workers)
            created = sum(r.created for r in runs)
            rate = created / elapsed
            per_link = worker_cpu / max(created, 1)
            rounds[str(procs)] = {
                "links": created,
                "seconds": round(elapsed, 2),
                "links_per_s": round(rate, 1),
                "links_per_s_per_process": round(rate / procs, 1),
                "worker_cpu_ms_per_link": round(per_link * 1000, 2),
                "machine_cpu_percent": machine,
                "429s": calls.get("429", 0),
                "close_budget_links_per_s": orgs * per_org,
                # A worker thread syncs one connection at a time, paced at the per-token rate.
                "thread_bound_links_per_s": procs * threads * per_token,
                # The cores if the workers had them to themselves (they share them with
                # PostgreSQL, Redis, the sandbox, the source; here also with other users).
                "cpu_bound_links_per_s": round(cores / per_link, 1) if per_link else None,
            }
    one = rounds["1"]["links_per_s"]
    return {
        "params": {
            "connections": connections,
            "event_types_each": per,
            "orgs": orgs,
            "latency_ms": 40,
            "limit_per_token": per_token,
            "limit_per_org": per_org,
            "workers": "1, 2 and 4 processes x 8 threads, one Redis and PostgreSQL",
            "cores": cores,
        },
        "ours": {
            "rounds": rounds,
            "close_budget_links_per_s": orgs * per_org,
            "bound": {
                str(procs): "close budget"
                if r["links_per_s"] >= 0.8 * r["close_budget_links_per_s"]
                else "threads x per-token rate"
                if r["links_per_s"] >= 0.75 * r["thread_bound_links_per_s"]
                else "cpu"
                for procs, r in rounds.items()
            },
        },
        "baseline": {"links_per_s_1_process": one},
        "ratio": round(rounds["2"]["links_per_s"] / one, 2) if one else None,
        "target": "links/s per process count beside its bounds; each round reaches 0.75 x its "
        "lower bound (threads x per-token rate, or the Close budget) unless the machine's CPU "
        "is the bound (>= 90 % busy); every link synced",
        "pass": all(r["links"] == connections * per for r in rounds.values())
        and (quick or all(at_a_bound(r) for r in rounds.values())),
    }


def at_a_bound(r: dict[str, Any]) -> bool:
    """A scale-out round ran as fast as its tightest bound allows (within 25 %), or the
    machine's CPU was saturated (the bound no worker count moves on one machine)."""
    lower = min(r["thread_bound_links_per_s"], r["close_budget_links_per_s"])
    return r["links_per_s"] >= 0.75 * lower or r["machine_cpu_percent"] >= 90


SCENARIOS: dict[str, Callable[[bool], Any]] = {
    "initial_one": initial_one,
    "fleet": fleet,
    "webhook_ingest": webhook_ingest,
    "webhook_to_close": webhook_to_close,
    "embedded_webhook_to_close": lambda quick: webhook_to_close(quick, embedded=True),
    "scheduler_tick": scheduler_tick,
    "worker_memory": worker_memory,
    "events_latency": events_latency,
    "team_org": team_org,
    "big_account": big_account,
    "one_machine": one_machine,
    "scale_out": scale_out,
}


def summary_line(name: str, result: dict[str, Any]) -> str:
    ours = json.dumps(result["ours"], separators=(",", ":"))
    base = json.dumps(result.get("baseline"), separators=(",", ":"))
    return f"{name:<24} {'PASS' if result['pass'] else 'MISS':<5} ratio={result.get('ratio')}  ours={ours}  baseline={base}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scenarios", nargs="*", choices=[*SCENARIOS, []], default=[])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    machine = {
        "cpus": psutil.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30),
        "python": platform.python_version(),
    }
    print(
        f"LinkSync benchmarks on {machine['cpus']} cores, {machine['memory_gb']} GB, Python {machine['python']}{' (quick)' if args.quick else ''}"
    )
    lines = []
    for name in args.scenarios or list(SCENARIOS):
        started = time.monotonic()
        outcome = SCENARIOS[name](args.quick)
        results = outcome if name == "fleet" else {name: outcome}
        for key, result in results.items():
            result["machine"] = machine
            result["quick"] = args.quick
            (RESULTS / f"{key}{'.quick' if args.quick else ''}.json").write_text(
                json.dumps(result, indent=2, default=str)
            )
            line = summary_line(key, result)
            lines.append(line)
            print(line, flush=True)
        print(f"  ({name} took {time.monotonic() - started:.0f} s)", flush=True)
    print("\nSummary")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
