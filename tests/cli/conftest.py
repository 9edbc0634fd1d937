"""Helpers for running the real `linksync` entry point in a subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def clean_env(instance: Path, **values: str) -> dict[str, str]:
    """The process environment without any of our settings, plus `values`."""
    names = set(Settings.model_fields)
    env = {k: v for k, v in os.environ.items() if k not in names and not k.startswith("LINKSYNC")}
    env.update(INSTANCE_PATH=str(instance), PYTHONPATH=str(ROOT), **values)
    return env


def linksync(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
