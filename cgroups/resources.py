"""What docker's resource flags ask for, parsed, validated and in OCI form.

``Resources`` holds the values of --memory, --memory-swap, --cpus … with
docker's meanings (memory_swap is memory + swap, -1 unlimited).  The
parsers take the flag strings docker takes and fail with docker's own
texts; ``validate`` checks a value against the host *before* any cgroup is
created, so a bad flag costs nothing (the engine exits 125 on UserError).
``to_oci``/``from_oci`` map to config.json's linux.resources, whose names
are the runtime-spec's (memory.limit, cpu.quota, blockIO.weight …).
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, replace
from pathlib import Path

from pyctr.errors import UserError

from . import fs
from .detect import Layout

MIN_MEMORY = 6 * 1024 * 1024          # docker's linuxMinMemory
DEFAULT_CFS_PERIOD = 100_000          # µs, what --cpus is a fraction of
V1_UNLIMITED = 9223372036854771712    # what memory.limit_in_bytes reads when unlimited

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_SIZE = r"^(\d+(?:\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$"  # compiled on first use


@dataclass(frozen=True)
class DeviceRule:
    """One OCI linux.resources.devices rule (the v1 devices cgroup's a/c/b major:minor rwm)."""

    allow: bool
    type: str = "a"          # a (all), c (char), b (block)
    major: int | None = None  # None = any (*)
    minor: int | None = None
    access: str = "rwm"

    def to_v1(self) -> str:
        """The devices.allow / devices.deny line: ``c 1:3 rwm``."""
        if self.type == "a":
            return "a"
        maj = "*" if self.major is None or self.major < 0 else str(self.major)
        mnr = "*" if self.minor is None or self.minor < 0 else str(self.minor)
        return f"{self.type} {maj}:{mnr} {self.access}"

    def to_oci(self) -> dict:
        d: dict = {"allow": self.allow, "type": self.type, "access": self.access}
        if self.major is not None:
            d["major"] = self.major
        if self.minor is not None:
            d["minor"] = self.minor
        return d

    @classmethod
    def from_oci(cls, d: dict) -> DeviceRule:
        return cls(allow=bool(d.get("allow", False)), type=d.get("type", "a") or "a",
                   major=d.get("major"), minor=d.get("minor"), access=d.get("access", "rwm"))


@dataclass(frozen=True)
class Resources:
    """Limits for one container; None means "not set" (the kernel's default)."""

    memory: int | None = None
    memory_swap: int | None = None        # memory + swap; -1 unlimited
    memory_reservation: int | None = None
    cpus: float | None = None
    cpu_period: int | None = None         # for OCI configs that give quota/period directly
    cpu_quota: int | None = None
    cpu_shares: int | None = None
    cpuset_cpus: str | None = None
    cpuset_mems: str | None = None
    pids_limit: int | None = None         # <= 0: unlimited
    blkio_weight: int | None = None
    device_read_bps: tuple[tuple[int, int, int], ...] = ()
    device_write_bps: tuple[tuple[int, int, int], ...] = ()
    devices: tuple[DeviceRule, ...] = ()

    def cfs(self) -> tuple[int, int] | None:
        """(quota, period) in µs for cpu.max / cpu.cfs_quota_us, or None."""
        period = self.cpu_period or DEFAULT_CFS_PERIOD
        if self.cpus:
            return round(self.cpus * period), period
        if self.cpu_quota is not None:
            return self.cpu_quota, period
        return None

    def with_docker_defaults(self, layout: Layout | None = None) -> Resources:
        """docker's implied swap: --memory alone allows as much swap again (swap = 2 × memory).

        Only where swap is accounted (on v1 memory.memsw.* exist), as docker does.
        """
        if not (self.memory and self.memory > 0 and self.memory_swap is None):
            return self
        if layout is not None and not swap_accounting(layout):
            return self
        return replace(self, memory_swap=2 * self.memory)

    def controllers(self) -> set[str]:
        """The controllers (v2 names) these limits need."""
        need = set()
        if self.memory or self.memory_swap or self.memory_reservation:
            need.add("memory")
        if self.cfs() or self.cpu_shares:
            need.add("cpu")
        if self.cpuset_cpus or self.cpuset_mems:
            need.add("cpuset")
        if self.pids_limit is not None:
            need.add("pids")
        if self.blkio_weight or self.device_read_bps or self.device_write_bps:
            need.add("io")
        return need

    # ---- OCI config.json linux.resources ---------------------------------

    def to_oci(self) -> dict:
        out: dict = {}
        mem = {k: v for k, v in (("limit", self.memory), ("reservation", self.memory_reservation),
                                 ("swap", self.memory_swap)) if v is not None}
        if mem:
            out["memory"] = mem
        cpu: dict = {}
        if self.cpu_shares is not None:
            cpu["shares"] = self.cpu_shares
        cfs = self.cfs()
        if cfs:
            cpu["quota"], cpu["period"] = cfs
        if self.cpuset_cpus:
            cpu["cpus"] = self.cpuset_cpus
        if self.cpuset_mems:
            cpu["mems"] = self.cpuset_mems
        if cpu:
            out["cpu"] = cpu
        if self.pids_limit is not None:
            out["pids"] = {"limit": self.pids_limit}
        bio: dict = {}
        if self.blkio_weight:
            bio["weight"] = self.blkio_weight
        for key, devs in (("throttleReadBpsDevice", self.device_read_bps),
                          ("throttleWriteBpsDevice", self.device_write_bps)):
            if devs:
                bio[key] = [{"major": a, "minor": b, "rate": r} for a, b, r in devs]
        if bio:
            out["blockIO"] = bio
        if self.devices:
            out["devices"] = [d.to_oci() for d in self.devices]
        return out

    @classmethod
    def from_oci(cls, d: dict | None) -> Resources:
        d = d or {}
        mem = d.get("memory") or {}
        cpu = d.get("cpu") or {}
        bio = d.get("blockIO") or {}

        def devs(key: str) -> tuple[tuple[int, int, int], ...]:
            return tuple((int(x["major"]), int(x["minor"]), int(x["rate"]))
                         for x in bio.get(key) or ())

        return cls(
            memory=mem.get("limit"), memory_swap=mem.get("swap"),
            memory_reservation=mem.get("reservation"),
            cpu_shares=cpu.get("shares"), cpu_quota=cpu.get("quota"),
            cpu_period=cpu.get("period"),
            cpuset_cpus=cpu.get("cpus") or None, cpuset_mems=cpu.get("mems") or None,
            pids_limit=(d.get("pids") or {}).get("limit"),
            blkio_weight=bio.get("weight"),
            device_read_bps=devs("throttleReadBpsDevice"),
            device_write_bps=devs("throttleWriteBpsDevice"),
            devices=tuple(DeviceRule.from_oci(x) for x in d.get("devices") or ()),
        )


# ---- docker's flag values --------------------------------------------------

def parse_bytes(text: str) -> int:
    """docker's RAMInBytes: "64m", "1.5g", "512k", "1024" (binary units)."""
    m = re.match(_SIZE, text.strip())
    if not m:
        raise UserError(f"invalid size: '{text}'")
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "").lower()])


def parse_memory_swap(text: str) -> int:
    """--memory-swap: a size, or -1 for unlimited swap."""
    return -1 if text.strip() == "-1" else parse_bytes(text)


def parse_cpus(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"invalid argument {text!r} for \"--cpus\" flag: "
                        "failed to parse as a decimal") from None
    return value


def parse_throttle_device(text: str) -> tuple[int, int, int]:
    """--device-read-bps /dev/sda:1mb → (major, minor, bytes per second)."""
    path, sep, rate = text.rpartition(":")
    if not sep or not path:
        raise UserError(f"bad format: {text}")
    if not path.startswith("/dev/"):
        raise UserError(f"bad format for device path: {text}")
    try:
        bps = parse_bytes(rate)
    except UserError:
        raise UserError(f"invalid rate for device: {text}. The correct format is "
                        "<device-path>:<number>[<unit>]. Number must be a positive integer. "
                        "Unit is optional and can be kb, mb, or gb") from None
    try:
        st = os.stat(path)
    except OSError as exc:
        raise UserError(f"{path}: {exc.strerror}", path=path, errno=exc.errno) from None
    if not stat.S_ISBLK(st.st_mode):
        raise UserError(f"{path} is not a block device", path=path)
    return os.major(st.st_rdev), os.minor(st.st_rdev), bps


# ---- host checks, before anything is created -------------------------------

def host_cpuset(layout: Layout) -> tuple[str, str]:
    """(cpus, mems) the root cgroup may use: what --cpuset-* must stay within."""
    if layout.driver == "v2" and layout.unified is not None:
        cands = [(layout.unified / "cpuset.cpus.effective", layout.unified / "cpuset.mems.effective")]
    elif "cpuset" in layout.v1:
        r = layout.v1["cpuset"]
        cands = [(r / "cpuset.effective_cpus", r / "cpuset.effective_mems"),
                 (r / "cpuset.cpus", r / "cpuset.mems")]
    else:
        cands = []
    cands.append((Path("/sys/devices/system/cpu/online"), Path("/sys/devices/system/node/online")))
    for cpus, mems in cands:
        try:
            c = cpus.read_text().strip()
        except OSError:
            continue
        try:
            m = mems.read_text().strip()
        except OSError:
            m = "0"
        return c, m
    return f"0-{(os.cpu_count() or 1) - 1}", "0"


def _check_cpuset(value: str, available: str, what: str, invalid: str) -> None:
    try:
        asked = fs.parse_list(value)
    except ValueError:
        raise UserError(f"Invalid value {value} for {invalid}") from None
    if not asked <= fs.parse_list(available):
        raise UserError(f"Requested {what} are not available - requested {value}, "
                        f"available: {available}")


def validate(res: Resources, layout: Layout, *, ncpus: int | None = None) -> None:
    """Raise UserError (docker's text) for a value this host cannot take."""
    if res.memory is not None and 0 < res.memory < MIN_MEMORY:
        raise UserError("Minimum memory limit allowed is 6MB")
    if res.memory_reservation is not None and 0 < res.memory_reservation < MIN_MEMORY:
        raise UserError("Minimum memory reservation allowed is 6MB")
    if res.memory_swap is not None and res.memory_swap > 0:
        if not res.memory:
            raise UserError("You should always set the Memory limit when using Memoryswap limit,"
                            " see usage")
        if res.memory_swap < res.memory:
            raise UserError("Minimum memoryswap limit should be larger than memory limit,"
                            " see usage")
    if res.memory and res.memory_reservation and res.memory < res.memory_reservation:
        raise UserError("Minimum memory limit can not be less than memory reservation limit,"
                        " see usage")
    if res.cpus is not None and res.cpus != 0:
        n = ncpus or os.cpu_count() or 1
        if res.cpus < 0.01 or res.cpus > n:
            raise UserError(f"range of CPUs is from 0.01 to {n}.00, as there are only {n} "
                            "CPUs available")
    if res.cpu_shares is not None and res.cpu_shares < 0:
        raise UserError(f"invalid CPU shares {res.cpu_shares}: must be 0 or more")
    if res.cpuset_cpus or res.cpuset_mems:
        cpus, mems = host_cpuset(layout)
        if res.cpuset_cpus:
            _check_cpuset(res.cpuset_cpus, cpus, "CPUs", "cpuset cpus")
        if res.cpuset_mems:
            _check_cpuset(res.cpuset_mems, mems, "memory nodes", "cpuset mems")
    if res.blkio_weight and not 10 <= res.blkio_weight <= 1000:
        raise UserError("Range of blkio weight is from 10 to 1000")
    for what, devs in (("read", res.device_read_bps), ("write", res.device_write_bps)):
        for major, minor, rate in devs:
            if rate < 0:
                raise UserError(f"invalid {what} rate {rate} for device {major}:{minor}")
    missing = sorted(c for c in res.controllers() if not _has_controller(layout, c))
    if missing:
        where = (f"{layout.unified}/cgroup.controllers" if layout.driver == "v2"
                 else "the v1 hierarchies in /proc/self/mountinfo")
        raise UserError(f"cgroup controller {', '.join(missing)} is not available on this host"
                        f" (not in {where})",
                        hint="limits need the controller mounted (v1) or listed in the root's "
                             "cgroup.controllers (v2)")
    if res.memory_swap and res.memory_swap > 0 and not swap_accounting(layout):
        raise UserError("your kernel does not support swap limit capabilities or the cgroup "
                        "is not mounted: --memory-swap cannot be set",
                        hint="boot with swapaccount=1 (memory.memsw.* files are missing)")


def swap_accounting(layout: Layout) -> bool:
    """Whether swap can be limited: v1 needs memory.memsw.*; v2 always has memory.swap.max."""
    if layout.driver == "v2":
        return True
    mem = layout.v1.get("memory")
    return mem is not None and (mem / "memory.memsw.limit_in_bytes").exists()


def _has_controller(layout: Layout, v2name: str) -> bool:
    if layout.driver == "v2":
        return v2name in layout.v2_controllers
    return {"io": "blkio"}.get(v2name, v2name) in layout.v1
