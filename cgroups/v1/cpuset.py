"""v1 cpuset: a new cpuset cgroup starts with empty cpuset.cpus and cpuset.mems, and a
task cannot join it (ENOSPC) until both are set — so each level is initialised from
its parent before anything else."""

from __future__ import annotations

from pathlib import Path

from .. import fs
from ..resources import Resources


def init_from_parent(d: Path) -> None:
    for name in ("cpuset.cpus", "cpuset.mems"):
        if not fs.read(d / name):
            fs.write(d / name, fs.read(d.parent / name))


def apply(d: Path, res: Resources) -> None:
    hint = "the value must be within the parent cgroup's cpuset"
    if res.cpuset_cpus:
        fs.write(d / "cpuset.cpus", res.cpuset_cpus, hint=hint)
    if res.cpuset_mems:
        fs.write(d / "cpuset.mems", res.cpuset_mems, hint=hint)
