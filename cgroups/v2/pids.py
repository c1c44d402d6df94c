"""v2 pids: pids.max; pids.current."""

from __future__ import annotations

from pathlib import Path

from .. import fs
from ..resources import Resources


def apply(d: Path, res: Resources) -> None:
    if res.pids_limit is not None:
        fs.write(d / "pids.max", res.pids_limit if res.pids_limit > 0 else "max")


def stats(d: Path) -> dict:
    return {"pids_current": fs.read_int(d / "pids.current") or 0,
            "pids_limit": fs.read_int(d / "pids.max")}
