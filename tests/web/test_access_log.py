"""gunicorn with our config: its access log keeps no bearer credential (no OAuth code or
state, no connect or manage token), and its worker heartbeat lives in memory. A real gunicorn
process, real requests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from service.connections.sessions import create_connect_session
from service.infra import migrate
from service.services import Services
from service.settings import Settings
from tests.conftest import ROOT, settings_env, wait_until
from tests.e2e.conftest import free_port


@contextmanager
def running_gunicorn(settings: Settings, port: int, log_path: Path) -> Iterator[psutil.Process]:
    """gunicorn with our config and one worker, serving on `port`, its output in log_path;
    yields the master once /healthz answers, and stops it."""
    env = settings_env(settings) | {"GUNICORN_BIND": f"127.0.0.1:{port}", "GUNICORN_WORKERS": "1"}
    command = [sys.executable, "-m", "gunicorn", "-c", "python:service.gunicorn_conf"]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*command, "service.wsgi:app"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:

        def up() -> bool:
            try:
                return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).ok
            except requests.RequestException:
                return False

        wait_until(up, timeout=30)
        yield psutil.Process(proc.pid)
    finally:
        proc.terminate()
        proc.wait(15)


def test_access_log_masks_tokens_and_oauth_codes(
    make_settings: Callable[..., Settings], tmp_path: Path, sandbox: Any
) -> None:
    port = free_port()
    settings = make_settings(PUBLIC_URL=f"http://127.0.0.1:{port}")
    migrate.upgrade(settings.database_url)
    svc = Services(settings, enqueue=lambda *_: None)
    with svc.db.session() as session:
        _, token, _ = create_connect_session(session, settings, "acct-access-log")
    svc.close()
    log_path = tmp_path / "gunicorn.log"
    with running_gunicorn(settings, port, log_path):
        base = f"http://127.0.0.1:{port}"
        code, state = "SECRETCODE1234567890", "SECRETSTATE1234567890abcd"
        requests.get(f"{base}/oauth/close/callback?code={code}&state={state}", timeout=5)
        requests.get(f"{base}/connect/{token}", timeout=5)
        requests.get(
            f"{base}/healthz?keep=1", headers={"Referer": f"{base}/connect/{token}"}, timeout=5
        )
        requests.get(f"{base}/manage/{token}", timeout=5)
        time.sleep(0.5)
    lines = log_path.read_text(errors="replace")
    assert "GET /oauth/close/callback?*** " in lines and "GET /connect/*** " in lines
    assert "GET /manage/*** " in lines and "/healthz?keep=1" in lines
    for secret in (code, state, token, "code="):
        assert secret not in lines, lines


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="no /dev/shm on this machine")
def test_worker_heartbeat_file_lives_in_memory(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """gunicorn's worker heartbeat (an fchmod on every loop turn) is a file in /dev/shm: on
    the disk it waited for the journal whenever PostgreSQL wrote back, stalling the worker
    (/healthz at 750-900 requests/s right after a webhook burst, against 2,700-3,000)."""
    port = free_port()
    settings = make_settings()
    migrate.upgrade(settings.database_url)
    with running_gunicorn(settings, port, tmp_path / "gunicorn.log") as master:
        workers = master.children()
        assert len(workers) == 1
        # The file is unlinked at once and stays open: /proc shows "<path> (deleted)".
        fd_dir = Path(f"/proc/{workers[0].pid}/fd")
        files = [os.readlink(fd) for fd in fd_dir.iterdir()]
        assert any(path.startswith("/dev/shm/") for path in files), files
