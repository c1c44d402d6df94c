"""v2 cpuset: cpuset.cpus and cpuset.mems (empty means "the parent's")."""

from __future__ import annotations

from pathlib import Path

from .. import fs
from ..resources import Resources


def apply(d: Path, res: Resources) -> None:
    hint = "the value must be within the parent's cpuset.cpus.effective / cpuset.mems.effective"
    if res.cpuset_cpus:
        fs.write(d / "cpuset.cpus", res.cpuset_cpus, hint=hint)
    if res.cpuset_mems:
        fs.write(d / "cpuset.mems", res.cpuset_mems, hint=hint)


def stats(d: Path) -> dict:
    return {}
