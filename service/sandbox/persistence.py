"""Saving the sandbox's world to a JSON file and reading it back, so that a dev sandbox that is
restarted still remembers what Close would (users, grants and tokens, links, shared links,
mappings). Off unless a `state_path` is given; tests stay in memory.

The file is replaced atomically (a temporary file in the same directory, flushed to disk, then
renamed over the old one): a crash mid-save leaves the previous world, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1


def write_atomically(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump({"version": FORMAT_VERSION, **data}, out, indent=1, sort_keys=False)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def read(path: Path) -> dict[str, Any] | None:
    """The saved world, or None when there is no file yet; ValueError when it is unreadable
    (a dev sandbox should say so rather than start empty and overwrite it)."""
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"{path}: not a sandbox state file ({exc})") from None
    if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path}: not a sandbox state file of version {FORMAT_VERSION}")
    return data
