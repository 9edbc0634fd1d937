"""`linksync doctor` says what it checked: a 4xx to an unauthenticated GET means reachable."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

from service.infra import migrate
from service.settings import Settings
from tests.conftest import settings_env
from tests.helpers import worker_alive


def test_doctor_explains_why_an_unauthenticated_4xx_passes(
    make_settings: Callable[..., Settings], sandbox: Any, source: Any
) -> None:
    settings = make_settings()
    migrate.upgrade(settings.database_url)
    worker_alive(settings)  # a healthy setup has a worker that reports in
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "doctor"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {line[6:].split("  ", 1)[0].strip(): line for line in done.stdout.splitlines()}
    api = rows["close api"]
    assert api.startswith("PASS")
    assert api.endswith(
        f"{sandbox.url}/api/v1/me/: reachable (401 for an unauthenticated GET is expected)"
    )
    assert "answered 4" not in done.stdout
    assert rows["source"].startswith("PASS") and ": reachable (" in rows["source"]
