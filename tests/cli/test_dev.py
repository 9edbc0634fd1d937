"""`linksync dev` as a newcomer sees it (one full start: it spawns five processes)."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from tests.cli.conftest import clean_env, free_port, linksync

LAST_LINE = "  Ctrl-C stops everything."


def test_dev_prints_its_summary_last_refuses_a_second_run_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    instance = tmp_path / "instance"
    ports = [str(free_port()) for _ in range(3)]
    args = ["dev", "--port", ports[0], "--sandbox-port", ports[1], "--source-port", ports[2]]
    env = clean_env(instance)
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", *args],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")))  # type: ignore[union-attr]
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while not any(line.rstrip("\n") == LAST_LINE for line in lines):
            assert proc.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.2)
        time.sleep(3)  # the children are up and quiet: nothing follows the summary
        output = "".join(lines)
        assert output.rstrip("\n").endswith(LAST_LINE), output
        assert "celery" not in output.lower() and "WARNING" not in output, output
        web = f"http://127.0.0.1:{ports[0]}"
        assert re.search(rf"\n    {re.escape(web)}/connect/\S+\n", output), output
        # How to get a fresh link once that one expired or was used (issue: the status page
        # must not die with the connect link).
        assert ".venv/bin/linksync connect-link demo-account" in output, output
        logs = instance / "logs"
        assert f"{logs}/<name>.log (sandbox, demo-source, worker, beat, web)" in output
        assert "ready." in (logs / "worker.log").read_text()
        assert str(instance / "sandbox-state.json") in output

        # The demo integrator's settings page: printed, served, and able to make a connect
        # session with the dev API key (the widget and its events are tests/e2e/test_widget.py).
        settings_page = f"http://127.0.0.1:{ports[2]}/settings"
        assert f"\n    {settings_page}\n" in output, output
        assert "Connect to Close" in requests.get(settings_page, timeout=10).text
        made = requests.post(f"http://127.0.0.1:{ports[2]}/_demo/connect-session", timeout=10)
        assert made.ok and made.json()["connect_url"].startswith(f"{web}/connect/"), made.text

        # The operator console is on, with the generated password the summary shows.
        match = re.search(r"user admin, password (\S+)", output)
        assert match, output
        assert (instance / "dev-operator-password").read_text() == match.group(1)
        session = requests.Session()
        page = session.get(f"{web}/admin/login", timeout=10).text
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert csrf, page
        signed_in = session.post(
            f"{web}/admin/login",
            data={"username": "admin", "password": match.group(1), "csrf_token": csrf.group(1)},
            timeout=10,
        )
        assert signed_in.ok and "Fleet" in signed_in.text

        second = linksync(*args, env=env, cwd=tmp_path)
        assert second.returncode == 1
        assert second.stdout == ""
        assert second.stderr.strip() == (
            f"linksync: another linksync dev is running (pid {proc.pid}, lock "
            f"{instance / 'dev.pid'}); use that one, or stop it (Ctrl-C in its terminal, "
            f"or kill {proc.pid}) first"
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        reader.join(5)
    assert "".join(lines).rstrip().endswith("stopped")
    with socket.socket() as probe:  # the web app is gone with it
        probe.bind(("127.0.0.1", int(ports[0])))


def test_dev_names_a_port_that_is_taken_before_starting_anything(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        done = linksync(
            *("dev", "--sandbox-port", port, "--port", str(free_port())),
            env=clean_env(tmp_path / "instance"),
            cwd=tmp_path,
        )
    assert done.returncode == 1
    assert done.stderr.strip().endswith(
        f"linksync: port {port} (Close sandbox) is already in use by another program; "
        "stop it or pick another port with --sandbox-port"
    )
    assert not (tmp_path / "instance" / "logs").exists()
