"""v1 cpu: cpu.shares, cpu.cfs_period_us, cpu.cfs_quota_us; usage from cpuacct.usage."""

from __future__ import annotations

from pathlib import Path

from .. import fs
from ..resources import Resources


def apply(d: Path, res: Resources) -> None:
    if res.cpu_shares:
        fs.write(d / "cpu.shares", res.cpu_shares)
    cfs = res.cfs()
    if cfs is not None:
        quota, period = cfs
        fs.write(d / "cpu.cfs_period_us", period)
        fs.write(d / "cpu.cfs_quota_us", quota if quota > 0 else -1)


def stats(cpuacct: Path) -> dict:
    """cpuacct.usage: total CPU time of the cgroup's tasks, in nanoseconds."""
    return {"cpu_usage_ns": fs.read_int(cpuacct / "cpuacct.usage") or 0}
