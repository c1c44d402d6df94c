"""The OCI runtime-spec config.json: Docker's defaults, and validation of what pyctr uses.

``default_spec`` is the written contract (runc's SPEC.md habit): the
mounts, capabilities, masked paths and namespaces a container gets unless a
bundle says otherwise.  ``load_spec`` checks every field the init pipeline
reads, so a bad bundle fails in the caller with the field's name and not
halfway through the init.
"""

from __future__ import annotations

import json
import resource
from pathlib import Path
from typing import Any

from pyctr.errors import UserError

OCI_VERSION = "1.0.2"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Docker's default set; every other capability is dropped from the bounding set.
DEFAULT_CAPABILITIES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
    "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]

# kernel capability numbers (linux/capability.h)
CAPABILITIES = {name: num for num, name in enumerate([
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
])}

MASKED_PATHS = [
    "/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys",
    "/proc/latency_stats", "/proc/sched_debug", "/proc/scsi", "/proc/timer_list",
    "/proc/timer_stats", "/sys/firmware", "/sys/devices/virtual/powercap",
]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]

NAMESPACES = ("pid", "network", "mount", "ipc", "uts", "cgroup", "user")
PROPAGATIONS = ("private", "rprivate", "slave", "rslave", "shared", "rshared",
                "unbindable", "runbindable")
RLIMITS = {f"RLIMIT_{n[7:]}": getattr(resource, n) for n in dir(resource)
           if n.startswith("RLIMIT_")}

# char devices every container gets (runc's defaults; console and ptmx come from devpts)
DEFAULT_DEVICES = [
    {"path": "/dev/null", "type": "c", "major": 1, "minor": 3},
    {"path": "/dev/zero", "type": "c", "major": 1, "minor": 5},
    {"path": "/dev/full", "type": "c", "major": 1, "minor": 7},
    {"path": "/dev/random", "type": "c", "major": 1, "minor": 8},
    {"path": "/dev/urandom", "type": "c", "major": 1, "minor": 9},
    {"path": "/dev/tty", "type": "c", "major": 5, "minor": 0},
]


def default_spec(args: list[str], *, terminal: bool = False) -> dict:
    """A config.json with Docker's defaults for running ``args``.

    linux.seccomp is written for these capabilities: whoever changes the
    bounding set should call ``seccomp.default_profile`` again (Docker's
    profile allows mount and friends exactly when CAP_SYS_ADMIN is there).
    """
    from .seccomp import default_profile

    caps = list(DEFAULT_CAPABILITIES)
    return {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": terminal,
            "user": {"uid": 0, "gid": 0},
            "args": list(args),
            "env": [DEFAULT_PATH] + (["TERM=xterm"] if terminal else []),
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": list(caps),
                             "permitted": list(caps), "inheritable": [], "ambient": []},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": False},
        "hostname": "pyctr",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620",
                         "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        ],
        "linux": {
            "namespaces": [{"type": t} for t in
                           ("pid", "network", "ipc", "uts", "mount", "cgroup")],
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
            "seccomp": default_profile(caps),
            "devices": [],
            "resources": {"devices": [{"allow": False, "access": "rwm"}] + [
                {"allow": True, "type": "c", "major": d["major"], "minor": d["minor"],
                 "access": "rwm"} for d in DEFAULT_DEVICES] + [
                {"allow": True, "type": "c", "major": 5, "minor": 1, "access": "rwm"},
                {"allow": True, "type": "c", "major": 5, "minor": 2, "access": "rwm"},
                {"allow": True, "type": "c", "major": 136, "access": "rwm"}]},
        },
    }


def _fail(field: str, must: str, value: Any = None) -> UserError:
    shown = "" if value is None else f" (got {json.dumps(value)[:80]})"
    return UserError(f"config.json: {field} must be {must}{shown}",
                     hint="fix the bundle's config.json (see `pyctr-runtime spec` for defaults)")


def _str_list(obj: dict, key: str, field: str, *, absolute: bool = False) -> list[str]:
    value = obj.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(field, "a list of strings", value)
    if absolute:
        for v in value:
            if not v.startswith("/"):
                raise _fail(field, "a list of absolute paths", v)
    return value


def _int(obj: dict, key: str, field: str, *, required: bool = True) -> None:
    if key not in obj and not required:
        return
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _fail(field, "a non-negative integer", value)


def validate(spec: Any) -> dict:
    """Check the parts of a config.json the runtime uses; return it unchanged."""
    if not isinstance(spec, dict):
        raise _fail("the document", "a JSON object")
    proc = spec.get("process")
    if not isinstance(proc, dict):
        raise _fail("process", "an object", proc)
    args = proc.get("args")
    if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
        raise _fail("process.args", "a non-empty list", args)
    for e in _str_list(proc, "env", "process.env"):
        if "=" not in e:
            raise _fail("process.env", "a list of KEY=VALUE strings", e)
    cwd = proc.get("cwd", "/")
    if not isinstance(cwd, str) or not cwd.startswith("/"):
        raise _fail("process.cwd", "an absolute path", cwd)
    if not isinstance(proc.get("terminal", False), bool):
        raise _fail("process.terminal", "true or false", proc.get("terminal"))
    size = proc.get("consoleSize")
    if size is not None:
        if not isinstance(size, dict):
            raise _fail("process.consoleSize", "an object", size)
        _int(size, "height", "process.consoleSize.height")
        _int(size, "width", "process.consoleSize.width")
    user = proc.get("user", {})
    if not isinstance(user, dict):
        raise _fail("process.user", "an object", user)
    _int(user, "uid", "process.user.uid")
    _int(user, "gid", "process.user.gid")
    gids = user.get("additionalGids", [])
    if not isinstance(gids, list) or not all(isinstance(g, int) and g >= 0 for g in gids):
        raise _fail("process.user.additionalGids", "a list of non-negative integers", gids)
    caps = proc.get("capabilities", {})
    if not isinstance(caps, dict):
        raise _fail("process.capabilities", "an object", caps)
    for kind in ("bounding", "effective", "permitted", "inheritable", "ambient"):
        for name in _str_list(caps, kind, f"process.capabilities.{kind}"):
            if name not in CAPABILITIES:
                raise _fail(f"process.capabilities.{kind}", "known capability names", name)
    rlimits = proc.get("rlimits", [])
    if not isinstance(rlimits, list):
        raise _fail("process.rlimits", "a list", rlimits)
    for i, rl in enumerate(rlimits):
        if not isinstance(rl, dict) or rl.get("type") not in RLIMITS:
            raise _fail(f"process.rlimits[{i}].type", "a known RLIMIT_* name",
                        rl.get("type") if isinstance(rl, dict) else rl)
        _int(rl, "soft", f"process.rlimits[{i}].soft")
        _int(rl, "hard", f"process.rlimits[{i}].hard")
    root = spec.get("root")
    if not isinstance(root, dict) or not isinstance(root.get("path"), str) or not root["path"]:
        raise _fail("root.path", "a path to the rootfs", root)
    if not isinstance(root.get("readonly", False), bool):
        raise _fail("root.readonly", "true or false", root.get("readonly"))
    if not isinstance(spec.get("hostname", ""), str):
        raise _fail("hostname", "a string", spec.get("hostname"))
    mounts = spec.get("mounts", [])
    if not isinstance(mounts, list):
        raise _fail("mounts", "a list", mounts)
    for i, m in enumerate(mounts):
        if not isinstance(m, dict):
            raise _fail(f"mounts[{i}]", "an object", m)
        dest = m.get("destination")
        if not isinstance(dest, str) or not dest.startswith("/"):
            raise _fail(f"mounts[{i}].destination", "an absolute path", dest)
        for key in ("type", "source"):
            if not isinstance(m.get(key, ""), str):
                raise _fail(f"mounts[{i}].{key}", "a string", m.get(key))
        _str_list(m, "options", f"mounts[{i}].options")
    linux = spec.get("linux", {})
    if not isinstance(linux, dict):
        raise _fail("linux", "an object", linux)
    seen = set()
    for i, ns in enumerate(linux.get("namespaces", [])):
        if not isinstance(ns, dict) or ns.get("type") not in NAMESPACES:
            raise _fail(f"linux.namespaces[{i}].type", "one of " + " ".join(NAMESPACES),
                        ns.get("type") if isinstance(ns, dict) else ns)
        if ns["type"] in seen:
            raise _fail(f"linux.namespaces[{i}].type", "unique", ns["type"])
        seen.add(ns["type"])
        if ns["type"] == "user":
            raise UserError("config.json: linux.namespaces: user namespaces are not supported yet",
                            hint="remove the user namespace from the bundle")
        if "path" in ns and (not isinstance(ns["path"], str) or not ns["path"].startswith("/")):
            raise _fail(f"linux.namespaces[{i}].path", "an absolute path", ns["path"])
    if "mount" not in seen:
        raise UserError("config.json: linux.namespaces must include a mount namespace",
                        hint="the init mounts /proc, /dev and pivots the root: without its "
                             "own mount namespace it would change the host's")
    if spec.get("hostname") and "uts" not in seen:
        raise UserError("config.json: hostname needs a uts namespace in linux.namespaces",
                        hint="add {\"type\": \"uts\"} or remove hostname")
    _str_list(linux, "maskedPaths", "linux.maskedPaths", absolute=True)
    _str_list(linux, "readonlyPaths", "linux.readonlyPaths", absolute=True)
    prop = linux.get("rootfsPropagation", "rprivate")
    if prop not in PROPAGATIONS:
        raise _fail("linux.rootfsPropagation", "one of " + " ".join(PROPAGATIONS), prop)
    if "seccomp" in linux:
        from .seccomp import problems

        for field, must, value in problems(linux["seccomp"])[:1]:
            raise _fail(field, must, value)
    for i, dev in enumerate(linux.get("devices", [])):
        if not isinstance(dev, dict) or not str(dev.get("path", "")).startswith("/dev/"):
            raise _fail(f"linux.devices[{i}].path", "a path under /dev", dev)
        if dev.get("type") not in ("c", "b", "u", "p"):
            raise _fail(f"linux.devices[{i}].type", "c, b, u or p", dev.get("type"))
    return spec


def load_spec(bundle: Path) -> dict:
    """Read and validate ``bundle``/config.json; the rootfs must exist."""
    path = Path(bundle) / "config.json"
    try:
        spec = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"bundle {bundle}: no config.json", path=str(path),
                        hint="a bundle is a directory with config.json and a rootfs") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"config.json: cannot read {path}: {exc}", path=str(path),
                        hint="config.json must be valid JSON") from None
    validate(spec)
    rootfs = rootfs_path(bundle, spec)
    if not rootfs.is_dir():
        raise UserError(f"config.json: root.path {spec['root']['path']!r} is not a directory",
                        path=str(rootfs), hint="root.path is relative to the bundle")
    return spec


def rootfs_path(bundle: Path, spec: dict) -> Path:
    """root.path resolved against the bundle (it may be absolute)."""
    return (Path(bundle) / spec["root"]["path"]).absolute()
