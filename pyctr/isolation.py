"""`pyctr inspect --isolation NAME`: the host and the container side by side, from the kernel.

Every value is read from the kernel, not from pyctr's records: /proc/PID/ns
inodes, /proc/PID/status (capabilities, no_new_privs, seccomp, NSpid),
/proc/PID/mountinfo (the container's own mount table), /proc/PID/cgroup and
the cgroup's files, /proc/PID/uid_map.  What only the container's own
namespaces can tell (its hostname, its interfaces) is read by a child
process that setns()es into them, as nsenter would.  The host column is
this process's own view (pyctr runs on the host).
scripts/inspect-isolation.sh shows the same with standard tools.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass

from pyctr.errors import Conflict

NAMESPACES = ("pid", "mnt", "uts", "ipc", "net", "cgroup", "user")


@dataclass
class Row:
    section: str
    what: str
    host: str
    container: str

    @property
    def differs(self) -> bool:
        return self.host != self.container


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as exc:
        return f"({exc.strerror})"


def _status(pid: str) -> dict[str, str]:
    out = {}
    for line in _read(f"/proc/{pid}/status").splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def _caps(hexmask: str) -> str:
    from pyctr.runtime.spec import CAPABILITIES

    try:
        mask = int(hexmask, 16)
    except ValueError:
        return hexmask
    names = [n.removeprefix("CAP_").lower() for n, bit in sorted(CAPABILITIES.items(),
                                                                  key=lambda kv: kv[1])
             if mask >> bit & 1]
    if not names:
        return f"{hexmask} (none)"
    return f"{hexmask} ({len(names)}: {', '.join(names)})" if len(names) < 20 else \
        f"{hexmask} ({len(names)} capabilities)"


def _root_mount(pid: str) -> str:
    for line in _read(f"/proc/{pid}/mountinfo").splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[4] == "/":
            rest = line.split(" - ", 1)[1].split()
            fstype, source, opts = rest[0], rest[1], rest[2] if len(rest) > 2 else ""
            return f"{fstype} {source} {opts}"
    return "(none)"


def _cgroup(pid: str) -> str:
    lines = _read(f"/proc/{pid}/cgroup").splitlines()
    v2 = [ln.split(":", 2)[2] for ln in lines if ln.startswith("0::")]
    mem = [ln.split(":", 2)[2] for ln in lines if ":memory:" in ln]
    return (mem or v2 or ["?"])[0]


def _limits(pid: str) -> dict[str, str]:
    """memory, pids and cpu limits of the cgroup ``pid`` is in (v1 or v2)."""
    lines = _read(f"/proc/{pid}/cgroup").splitlines()
    by = {}
    for ln in lines:
        _, ctrls, path = ln.split(":", 2)
        for c in ctrls.split(",") if ctrls else [""]:
            by[c] = path
    out = {}
    if "memory" in by or "pids" in by:  # v1 (hybrid hosts)
        out["memory"] = _read(f"/sys/fs/cgroup/memory{by.get('memory', '')}/memory.limit_in_bytes")
        out["pids"] = _read(f"/sys/fs/cgroup/pids{by.get('pids', '')}/pids.max")
        cpu = by.get("cpu", by.get("cpu,cpuacct", ""))
        quota = _read(f"/sys/fs/cgroup/cpu{cpu}/cpu.cfs_quota_us")
        period = _read(f"/sys/fs/cgroup/cpu{cpu}/cpu.cfs_period_us")
        out["cpu"] = f"{quota} {period}"
    else:
        base = f"/sys/fs/cgroup{by.get('', '')}"
        out["memory"] = _read(f"{base}/memory.max")
        out["pids"] = _read(f"{base}/pids.max")
        out["cpu"] = _read(f"{base}/cpu.max")
    return out


def _inside(pid: int) -> dict:
    """Hostname and interfaces as the container sees them: a child setns()es into its
    UTS and network namespaces and reports back on a pipe."""
    from pyctr.runtime import syscalls as sc

    r, w = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        os.close(r)
        out: dict = {}
        try:
            for name, flag in (("uts", sc.CLONE_NEWUTS), ("net", sc.CLONE_NEWNET)):
                fd = os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
                try:
                    sc.setns(fd, flag)
                finally:
                    os.close(fd)
            out = {"hostname": os.uname().nodename, "interfaces": _interfaces()}
        except OSError as exc:
            out = {"error": str(exc)}
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(child, 0)
    return json.loads(data or b"{}")


def _interfaces() -> list[str]:
    """``name address/prefix state`` of each interface of this network namespace (IPv4)."""
    import fcntl
    import struct

    out = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            req = struct.pack("256s", name.encode()[:15])
            try:
                addr = socket.inet_ntoa(fcntl.ioctl(s.fileno(), 0x8915, req)[20:24])  # SIOCGIFADDR
                mask = socket.inet_ntoa(fcntl.ioctl(s.fileno(), 0x891B, req)[20:24])  # NETMASK
                prefix = int.from_bytes(socket.inet_aton(mask), "big").bit_count()
                addr = f"{addr}/{prefix}"
            except OSError:
                addr = "-"
            flags = struct.unpack("H", fcntl.ioctl(s.fileno(), 0x8913, req)[16:18])[0]  # FLAGS
            out.append(f"{name} {addr} {'UP' if flags & 1 else 'DOWN'}")
    return out


def report(engine, c) -> list[Row]:
    """The rows of `inspect --isolation` for a running container."""
    state = engine.inspect(c)["State"]
    if not state.get("Running"):
        raise Conflict(f"container {c.name} is not running",
                       hint="start it: isolation is what a running container's PID 1 has")
    pid = str(state["Pid"])
    rows: list[Row] = []
    for ns in NAMESPACES:
        host = _ns(f"/proc/self/ns/{ns}")
        rows.append(Row("namespaces", ns, host, _ns(f"/proc/{pid}/ns/{ns}")))
    me, it = _status("self"), _status(pid)
    cmd = _read(f"/proc/{pid}/cmdline").replace("\0", " ").strip()
    host_init = _read("/proc/1/cmdline").replace("\0", " ").strip()
    rows.append(Row("process", "PID 1 (host pid → pid inside)", f"1: {host_init}",
                    f"{pid} → {it.get('NSpid', '?').split()[-1]}: {cmd}"))
    inside = _inside(int(pid))
    rows.append(Row("uts", "hostname", os.uname().nodename, inside.get("hostname", "?")))
    rows.append(Row("mounts", "root (/) mount", _root_mount("self"), _root_mount(pid)))
    layers = (c.record.get("GraphDriver") or {}).get("Data", {})
    if layers:
        rows.append(Row("mounts", "overlay upperdir", "-", layers.get("UpperDir", "?")))
    rows.append(Row("cgroup", "cgroup", _cgroup("self"), _cgroup(pid)))
    lh, lc = _limits("self"), _limits(pid)
    for k in ("memory", "pids", "cpu"):
        rows.append(Row("cgroup", f"{k} limit", lh.get(k, "?"), lc.get(k, "?")))
    for key in ("CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb"):
        rows.append(Row("capabilities", key, _caps(me.get(key, "?")), _caps(it.get(key, "?"))))
    for key in ("NoNewPrivs", "Seccomp"):
        legend = {"Seccomp": {"0": "0 (off)", "1": "1 (strict)", "2": "2 (filter)"},
                  "NoNewPrivs": {"0": "0", "1": "1 (no_new_privs)"}}[key]
        rows.append(Row("security", key, legend.get(me.get(key, "?"), me.get(key, "?")),
                        legend.get(it.get(key, "?"), it.get(key, "?"))))
    rows.append(Row("network", "interfaces", "; ".join(_interfaces()),
                    "; ".join(inside.get("interfaces", [])) or inside.get("error", "?")))
    for m in ("uid_map", "gid_map"):
        rows.append(Row("user", m, " ".join(_read(f"/proc/self/{m}").split()),
                        " ".join(_read(f"/proc/{pid}/{m}").split())))
    return rows


def _ns(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "(none)"


def render(rows: list[Row], width: int = 60) -> str:
    """A table: what | host | container, a ≠ where they differ."""
    def cut(s: str) -> str:
        return s if len(s) <= width else s[:width - 1] + "…"

    w0 = max(len(r.what) for r in rows)
    lines = [f"{'':2}{'WHAT':<{w0}}  {'HOST':<{width}}  CONTAINER"]
    section = None
    for r in rows:
        if r.section != section:
            section = r.section
            lines.append(f"[{section}]")
        mark = "≠ " if r.differs else "  "
        lines.append(f"{mark}{r.what:<{w0}}  {cut(r.host):<{width}}  {r.container}")
    return "\n".join(lines)


def as_json(rows: list[Row]) -> str:
    return json.dumps([{"section": r.section, "what": r.what, "host": r.host,
                        "container": r.container, "differs": r.differs} for r in rows],
                      indent=2)
