"""v2 cpu: cpu.max ("quota period") and cpu.weight (from v1 shares); cpu.stat usage."""

from __future__ import annotations

from pathlib import Path

from .. import fs
from ..resources import Resources


def shares_to_weight(shares: int) -> int:
    """v1 cpu.shares [2, 262144] → v2 cpu.weight [1, 10000]: 1 + ((shares-2)*9999)/262142."""
    if shares <= 0:
        return 0
    return 1 + ((shares - 2) * 9999) // 262142


def apply(d: Path, res: Resources) -> None:
    if res.cpu_shares:
        fs.write(d / "cpu.weight", shares_to_weight(res.cpu_shares))
    cfs = res.cfs()
    if cfs is not None:
        quota, period = cfs
        fs.write(d / "cpu.max", f"{quota if quota > 0 else 'max'} {period}")


def stats(d: Path) -> dict:
    return {"cpu_usage_ns": fs.read_keyed(d / "cpu.stat").get("usage_usec", 0) * 1000}
