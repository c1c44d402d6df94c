"""v2 io: io.bfq.weight or io.weight, io.max throttles; io.stat bytes."""

from __future__ import annotations

from pathlib import Path

from pyctr.errors import PyctrError

from .. import fs
from ..resources import Resources


def blkio_to_io_weight(weight: int) -> int:
    """v1 blkio.weight [10, 1000] → v2 io.weight [1, 10000] (runc's conversion)."""
    return 1 + (weight - 10) * 9999 // 990


def apply(d: Path, res: Resources) -> None:
    if res.blkio_weight:
        # BFQ takes the v1 range as is; the generic io.weight wants 1..10000
        if (d / "io.bfq.weight").exists():
            fs.write(d / "io.bfq.weight", res.blkio_weight)
        elif (d / "io.weight").exists():
            fs.write(d / "io.weight", f"default {blkio_to_io_weight(res.blkio_weight)}")
        else:
            raise PyctrError(f"cannot set --blkio-weight {res.blkio_weight}: neither io.bfq.weight"
                             f" nor io.weight exists in {d}", step="cgroup", path=str(d),
                             hint="the I/O scheduler has no weight (use bfq, or drop the flag)")
    for major, minor, rate in res.device_read_bps:
        fs.write(d / "io.max", f"{major}:{minor} rbps={rate}", append=True)
    for major, minor, rate in res.device_write_bps:
        fs.write(d / "io.max", f"{major}:{minor} wbps={rate}", append=True)


def stats(d: Path) -> dict:
    read = write = 0
    try:
        text = fs.read(d / "io.stat")
    except PyctrError:
        return {}
    for line in text.splitlines():
        for kv in line.split()[1:]:
            k, _, v = kv.partition("=")
            if k == "rbytes":
                read += int(v)
            elif k == "wbytes":
                write += int(v)
    return {"io_read_bytes": read, "io_write_bytes": write}
