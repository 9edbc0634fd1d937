"""Every entry point: a bad setting is one line naming the variable, and exit status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.conftest import clean_env, linksync

PROBLEM = "linksync: SYNC_INTERVAL_SECONDS: Input should be a valid integer"


@pytest.mark.parametrize("command", [["dev"], ["web"], ["worker"], ["beat"], ["db", "upgrade"]])
def test_a_bad_value_is_one_line_and_exit_2(tmp_path: Path, command: list[str]) -> None:
    env = clean_env(tmp_path / "instance", SYNC_INTERVAL_SECONDS="soon")
    done = linksync(*command, env=env, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith(PROBLEM)


@pytest.mark.parametrize(
    "code", ["import service.wsgi", "import workers.main"], ids=["wsgi", "workers"]
)
def test_the_process_entry_modules_say_the_same_one_line(tmp_path: Path, code: str) -> None:
    env = clean_env(tmp_path / "instance", SYNC_INTERVAL_SECONDS="soon")
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().startswith(PROBLEM)
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_dotenv_typo_stops_dev_naming_the_intended_variable(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("LINKSYNC_ENV=dev\nDATABSE_URL=sqlite:///x.db\n")
    done = linksync("dev", env=clean_env(tmp_path / "instance"), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "linksync: DATABSE_URL: unknown variable in .env; did you mean DATABASE_URL?"
    )
    assert not (tmp_path / "instance" / "logs").exists()  # nothing was started
