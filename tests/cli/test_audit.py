"""`make audit` (.ci/audit.py): "no known vulnerabilities" only when something was checked."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.unit

SKIP = "Dependency not found on PyPI and could not be audited"


def audit() -> ModuleType:
    path = Path(__file__).parents[2] / ".ci" / "audit.py"
    spec = importlib.util.spec_from_file_location("ci_audit", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_everything_skipped_is_nothing_checked_and_fails() -> None:
    deps = [{"name": n, "skip_reason": f"{SKIP}: {n} (1.0)"} for n in ("flask", "celery")]
    lines, code = audit().summarize(deps)
    assert code == 1
    assert lines == [
        f"audit: nothing was checked: {SKIP} (2 of 2 packages; "
        "is the vulnerability database reachable?)"
    ]


def test_checked_packages_pass_or_fail_on_vulnerabilities() -> None:
    clean = [{"name": "flask", "version": "3.1.0", "vulns": []}]
    lines, code = audit().summarize([*clean, {"name": "x", "skip_reason": f"{SKIP}: x (1)"}])
    assert code == 0
    assert (
        lines[-1] == "audit: checked 1 of 2 packages, 0 with known vulnerabilities, 1 not checked"
    )
    vulnerable = [{"name": "jinja2", "version": "2.0", "vulns": [{"id": "PYSEC-1"}]}]
    lines, code = audit().summarize(clean + vulnerable)
    assert code == 1 and "audit: jinja2 2.0: PYSEC-1" in lines
