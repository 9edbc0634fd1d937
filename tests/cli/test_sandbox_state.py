"""`linksync sandbox --state-path`: a restarted sandbox keeps Close's tokens and links."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from tests.cli.conftest import clean_env, free_port


@contextmanager
def sandbox_process(port: int, state: Path, tmp_path: Path) -> Iterator[str]:
    command = [sys.executable, "-m", "service.cli", "sandbox", "--port", str(port)]
    proc = subprocess.Popen(
        [*command, "--state-path", str(state)],
        env=clean_env(tmp_path / "instance"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"{url}/_sandbox/calls", timeout=1)
                break
            except requests.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline, "sandbox did not start"
                time.sleep(0.2)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)


def test_a_restarted_sandbox_keeps_the_grant_its_tokens_and_the_links(tmp_path: Path) -> None:
    state, port = tmp_path / "state" / "sandbox-state.json", free_port()
    with sandbox_process(port, state, tmp_path) as url:
        tokens = requests.post(
            f"{url}/_sandbox/issue-tokens",
            json={"user_id": "user_jane", "organization_id": "orga_acme"},
            timeout=5,
        ).json()
        auth = {"Authorization": f"Bearer {tokens['access_token']}"}
        for n in (1, 2):
            created = requests.post(
                f"{url}/api/v1/scheduling_link/integration/",
                json={
                    "source_id": f"evt_{n}",
                    "name": f"Call {n}",
                    "url": f"https://b.example/{n}",
                },
                headers=auth,
                timeout=5,
            )
            assert created.ok, created.text
        before = requests.get(f"{url}/api/v1/scheduling_link/", headers=auth, timeout=5).json()
    assert state.exists()

    with sandbox_process(port, state, tmp_path) as url:
        me = requests.get(f"{url}/api/v1/me/", headers=auth, timeout=5)
        assert me.status_code == 200 and me.json()["id"] == "user_jane"
        after = requests.get(f"{url}/api/v1/scheduling_link/", headers=auth, timeout=5).json()
        assert after["data"] == before["data"]
        assert {link["source_id"] for link in after["data"]} >= {"evt_1", "evt_2"}
        refreshed = requests.post(
            f"{url}/oauth2/token/",
            data={
                "grant_type": "refresh_token",
                "refresh_token": tokens["refresh_token"],
                "client_id": "linksync-sandbox",
                "client_secret": "sandbox-secret",
            },
            timeout=5,
        )
        assert refreshed.status_code == 200, refreshed.text
