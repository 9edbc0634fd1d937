"""Every benchmark scenario runs in its tiny form, so the benchmarks cannot rot. Numbers are
not asserted here (benchmarks are not tests), only that each scenario produced a complete result
and the invariants that do not depend on speed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.run import RESULTS, ROOT, SCENARIOS

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]


def test_every_scenario_runs_in_quick_mode() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Summary" in done.stdout
    names = [n for n in SCENARIOS if n != "fleet"] + [
        "fleet_initial",
        "no_change_resync",
        "one_change_per_account",
    ]
    results = {name: json.loads((RESULTS / f"{name}.quick.json").read_text()) for name in names}
    for name, result in results.items():
        assert {"params", "ours", "baseline", "target", "pass", "machine"} <= set(result), name
    # Invariants that hold at any speed:
    assert results["no_change_resync"]["ours"]["with_etag"]["close_calls"] == 0
    assert results["no_change_resync"]["ours"]["without_etag"]["writes"] == 0
    assert (
        results["one_change_per_account"]["ours"]["writes"]
        == results["one_change_per_account"]["params"]["changes"]
    )
    assert results["webhook_ingest"]["ours"]["lost"] == 0
    tick = results["scheduler_tick"]["ours"]
    assert len({row["statements"] for row in tick.values()}) == 1
    assert (
        results["worker_memory"]["ours"]["created"]
        == results["worker_memory"]["params"]["event_types"]
    )
    big = results["big_account"]["ours"]
    n = results["big_account"]["params"]["event_types"]
    assert big["created"] == big["close_writes"] == big["close_links"] == n
    assert big["overlapping_runs"] == 0
    assert big["resync_close_writes"] == 0 and big["resync_source_listings"] <= 1
    machine = results["one_machine"]["ours"]
    assert len({row["statements"] for row in machine["tick"].values()}) == 1
    assert all(set(api["statuses"]) == {"200"} for api in machine["api"].values())
    assert machine["redis"]["bytes_per_connection"] > 0
    scale = results["scale_out"]
    links = scale["params"]["connections"] * scale["params"]["event_types_each"]
    assert [r["links"] for r in scale["ours"]["rounds"].values()] == [links] * 3
