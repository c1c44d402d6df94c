"""v1 blkio: blkio.weight (CFQ, gone from modern kernels) or blkio.bfq.weight, and the
throttle files; bytes from blkio.throttle.io_service_bytes_recursive."""

from __future__ import annotations

from pathlib import Path

from pyctr.errors import PyctrError

from .. import fs
from ..resources import Resources


def apply(d: Path, res: Resources) -> None:
    if res.blkio_weight:
        for name in ("blkio.weight", "blkio.bfq.weight"):
            if (d / name).exists():
                fs.write(d / name, res.blkio_weight)
                break
        else:
            raise PyctrError(f"cannot set --blkio-weight {res.blkio_weight}: neither blkio.weight"
                             f" nor blkio.bfq.weight exists in {d}", step="cgroup", path=str(d),
                             hint="the kernel's I/O scheduler has no weight (use bfq, or drop "
                                  "the flag)")
    for major, minor, rate in res.device_read_bps:
        fs.write(d / "blkio.throttle.read_bps_device", f"{major}:{minor} {rate}", append=True)
    for major, minor, rate in res.device_write_bps:
        fs.write(d / "blkio.throttle.write_bps_device", f"{major}:{minor} {rate}", append=True)


def stats(d: Path) -> dict:
    read = write = 0
    for line in fs.read(d / "blkio.throttle.io_service_bytes_recursive").splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == "Read":
            read += int(parts[2])
        elif len(parts) == 3 and parts[1] == "Write":
            write += int(parts[2])
    return {"io_read_bytes": read, "io_write_bytes": write}
