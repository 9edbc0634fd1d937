"""`make audit`: pip-audit over requirements.lock, honest about what it could check.

pip-audit says "No known vulnerabilities found" even when it skipped every package (no route
to the vulnerability database, packages not on PyPI): this reads its JSON report instead and
exits 0 only when packages were checked and none has a known vulnerability.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from typing import Any


def main(requirements: str = "requirements.lock") -> int:
    command = [
        *(sys.executable, "-m", "pip_audit", "--requirement", requirements),
        *("--no-deps", "--disable-pip", "--progress-spinner", "off", "--format", "json"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    try:
        dependencies = json.loads(done.stdout)["dependencies"]
    except (ValueError, KeyError):
        sys.stderr.write(done.stderr)
        print(f"audit: nothing was checked: pip-audit failed (exit {done.returncode})")
        return 1
    lines, code = summarize(dependencies)
    print("\n".join(lines))
    return code


def summarize(dependencies: list[dict[str, Any]]) -> tuple[list[str], int]:
    """The report's lines and the exit status for pip-audit's JSON `dependencies`."""
    lines: list[str] = []
    skipped = [d for d in dependencies if "skip_reason" in d]
    checked = [d for d in dependencies if "skip_reason" not in d]
    vulnerable = [d for d in checked if d.get("vulns")]
    if not checked:
        reasons = Counter(d["skip_reason"].split(":")[0] for d in skipped)
        reason, count = reasons.most_common(1)[0] if reasons else ("no packages listed", 0)
        lines.append(
            f"audit: nothing was checked: {reason} ({count} of {len(dependencies)} packages; "
            "is the vulnerability database reachable?)"
        )
        return lines, 1
    for dep in vulnerable:
        ids = ", ".join(v["id"] for v in dep["vulns"])
        lines.append(f"audit: {dep['name']} {dep['version']}: {ids}")
    for dep in skipped:
        lines.append(f"audit: not checked: {dep['skip_reason']}")
    lines.append(
        f"audit: checked {len(checked)} of {len(dependencies)} packages, "
        f"{len(vulnerable)} with known vulnerabilities, {len(skipped)} not checked"
    )
    return lines, 1 if vulnerable else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
