"""v2 memory: memory.max, memory.swap.max (swap alone), memory.low; memory.events for OOM."""

from __future__ import annotations

import errno
from pathlib import Path

from pyctr.errors import PyctrError

from .. import fs
from ..resources import Resources


def swap_max(memory: int | None, memory_swap: int | None) -> str | None:
    """docker's memory+swap total as v2's swap-only memory.swap.max (runc's conversion)."""
    if memory_swap is None or memory_swap == 0:
        return None
    if memory_swap == -1:
        return "max"
    if not memory or memory < 0:
        raise PyctrError("cannot set a swap limit without a memory limit", step="cgroup")
    if memory_swap < memory:
        raise PyctrError(f"memory+swap limit {memory_swap} is below the memory limit {memory}",
                         step="cgroup")
    return str(memory_swap - memory)


def _num(v: int | None) -> str | None:
    if v is None or v == 0:
        return None
    return "max" if v < 0 else str(v)


def apply(d: Path, res: Resources) -> None:
    swap = swap_max(res.memory, res.memory_swap)
    if swap is not None:
        try:
            fs.write(d / "memory.swap.max", swap)
        except PyctrError as exc:
            # no swap on this kernel: "no swap" and "unlimited swap" both already hold
            if not (exc.errno == errno.ENOENT and swap in ("max", "0")):
                raise
    if (v := _num(res.memory)) is not None:
        fs.write(d / "memory.max", v)
    if (v := _num(res.memory_reservation)) is not None:
        fs.write(d / "memory.low", v)


def stats(d: Path) -> dict:
    return {"memory_usage": fs.read_int(d / "memory.current") or 0,
            "memory_limit": fs.read_int(d / "memory.max")}


def oom_kills(d: Path) -> int:
    return fs.read_keyed(d / "memory.events").get("oom_kill", 0)
