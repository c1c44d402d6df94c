"""v1 memory: memory.limit_in_bytes, memory.memsw.limit_in_bytes (memory+swap, docker's
meaning as is), memory.soft_limit_in_bytes; memory.oom_control for OOM kills."""

from __future__ import annotations

import errno
from pathlib import Path

from pyctr.errors import PyctrError

from .. import fs
from ..resources import V1_UNLIMITED, Resources

_BUSY = {errno.EBUSY: "the cgroup uses more memory than the new limit, or memory.limit_in_bytes"
                      " would exceed memory.memsw.limit_in_bytes"}


def _limit(d: Path, v: int) -> None:
    fs.write(d / "memory.limit_in_bytes", v, hints=_BUSY)


def _swap(d: Path, v: int) -> None:
    f = d / "memory.memsw.limit_in_bytes"
    if not f.exists():
        raise PyctrError(f"cannot set a swap limit: {f} does not exist", step="cgroup",
                         path=str(f), errno=errno.ENOENT,
                         hint="swap accounting is off (boot with swapaccount=1) — "
                              "drop --memory-swap")
    fs.write(f, v, hints=_BUSY)


def apply(d: Path, res: Resources) -> None:
    mem, swap = res.memory or 0, res.memory_swap or 0
    if mem == -1 and swap == 0:
        swap = -1
    if mem and swap:
        # memsw must stay >= limit at every moment: order the two writes (runc's rule)
        cur = fs.read_int(d / "memory.limit_in_bytes") or 0
        if swap == -1 or cur < swap:
            _swap(d, swap)
            _limit(d, mem)
        else:
            _limit(d, mem)
            _swap(d, swap)
    elif mem:
        _limit(d, mem)
    elif swap:
        _swap(d, swap)
    if res.memory_reservation:
        fs.write(d / "memory.soft_limit_in_bytes", res.memory_reservation)


def stats(d: Path) -> dict:
    limit = fs.read_int(d / "memory.limit_in_bytes")
    return {"memory_usage": fs.read_int(d / "memory.usage_in_bytes") or 0,
            "memory_limit": None if limit is None or limit >= V1_UNLIMITED else limit}


def oom_kills(d: Path) -> int:
    return fs.read_keyed(d / "memory.oom_control").get("oom_kill", 0)
