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
        timeout=400,
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
