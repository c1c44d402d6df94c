"""What each init step is about to do, in words, for `--explain` (pyctr/explain.py).

``describe(step, ctx)`` reads only the spec and the context, never the
kernel: the steps themselves (init.py) stay free of explanation code, and
the lines name the objects the step makes — each mount, the capability
sets, the seccomp profile, the command.  An empty list: the step does
nothing for this container (no -t, no --read-only …).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .spec import CAPABILITIES

if TYPE_CHECKING:
    from .init import InitContext

_ALL_CAPS = len(CAPABILITIES)


def _mounts(ctx: InitContext) -> list[str]:
    out = []
    for m in ctx.spec.get("mounts", []):
        opts = ",".join(m.get("options", []))
        kind = m.get("type") or "bind"
        src = m.get("source", kind)
        out.append(f"mount {kind} {src} on {m['destination']}" + (f" ({opts})" if opts else ""))
    return out


def _caps(ctx: InitContext) -> list[str]:
    caps = ctx.spec["process"].get("capabilities", {})
    eff = caps.get("effective", [])
    shown = ", ".join(c.removeprefix("CAP_").lower() for c in eff)
    return [(f"capset: {len(eff)} of {_ALL_CAPS} kept (effective = permitted = bounding): "
            f"{shown or 'none'}")]


def _seccomp(ctx: InitContext) -> list[str]:
    prof = ctx.spec.get("linux", {}).get("seccomp")
    if not prof:
        return []
    allowed = sum(len(r.get("names", [])) for r in prof.get("syscalls", [])
                  if r.get("action") == "SCMP_ACT_ALLOW")
    return [(f"seccomp(SECCOMP_SET_MODE_FILTER): default {prof.get('defaultAction')}, "
            f"{allowed} syscalls allowed by name")]


def _paths(key: str, verb: str):
    def lines(ctx: InitContext) -> list[str]:
        paths = ctx.spec.get("linux", {}).get(key, [])
        return [f"{verb} {len(paths)} paths: {', '.join(paths[:6])}"
                + (" …" if len(paths) > 6 else "")] if paths else []
    return lines


def _user(ctx: InitContext) -> list[str]:
    u = ctx.spec["process"].get("user", {})
    extra = u.get("additionalGids", [])
    return [f"setgroups({extra}) setgid({u.get('gid', 0)}) setuid({u.get('uid', 0)})"]


def _rlimits(ctx: InitContext) -> list[str]:
    rls = ctx.spec["process"].get("rlimits", [])
    return [f"setrlimit {r['type']} {r['soft']}/{r['hard']}" for r in rls]


def _execve(ctx: InitContext) -> list[str]:
    args = ctx.spec["process"]["args"]
    return [f"execve({ctx.executable or args[0]}, {args})"]


def _loopback(ctx: InitContext) -> list[str]:
    own = any(ns["type"] == "network" and not ns.get("path")
              for ns in ctx.spec.get("linux", {}).get("namespaces", []))
    return ["ip link set lo up"] if own else []


_LINES = {
    "mount propagation": lambda ctx: ["mount --make-rprivate /"],
    "rootfs bind": lambda ctx: [f"mount --rbind {ctx.rootfs} {ctx.rootfs}"],
    "mounts": _mounts,
    "devices": lambda ctx: ["mknod /dev/null, zero, full, random, urandom, tty (and the spec's)"],
    "dev symlinks": lambda ctx: ["/dev/fd, stdin, stdout, stderr, ptmx -> pts/ptmx"],
    "masked paths": _paths("maskedPaths", "hide"),
    "readonly paths": _paths("readonlyPaths", "read-only bind of"),
    "seccomp compile": lambda ctx: ["BPF from the profile"] if ctx.spec.get(
        "linux", {}).get("seccomp") else [],
    "pivot_root": lambda ctx: [(f'pivot_root(".", ".") in {ctx.rootfs}; umount2(old root, '
                               "MNT_DETACH)")],
    "root readonly": lambda ctx: ["mount -o remount,bind,ro /"] if ctx.spec["root"].get(
        "readonly") else [],
    "console": lambda ctx: ["open a pty; setsid; TIOCSCTTY"] if ctx.spec["process"].get(
        "terminal") else [],
    "hostname": lambda ctx: [f"sethostname({ctx.spec['hostname']!r})"] if ctx.spec.get(
        "hostname") else [],
    "loopback": _loopback,
    "rlimits": _rlimits,
    "user": _user,
    "capabilities": _caps,
    "no_new_privs": lambda ctx: ["prctl(PR_SET_NO_NEW_PRIVS, 1)"] if ctx.spec["process"].get(
        "noNewPrivileges") else [],
    "seccomp": lambda ctx: _seccomp(ctx) if ctx.spec["process"].get("noNewPrivileges") else [],
    "seccomp without no_new_privs": lambda ctx: [] if ctx.spec["process"].get(
        "noNewPrivileges") else _seccomp(ctx),
    "chdir": lambda ctx: [f"chdir({ctx.spec['process'].get('cwd', '/')!r})"],
    "lookup executable": lambda ctx: [f"{ctx.spec['process']['args'][0]} in PATH"],
    "close fds": lambda ctx: ["close every fd but stdio"],
    "signals": lambda ctx: ["default dispositions, empty mask"],
    "wait for start": lambda ctx: ["block on the exec fifo"],
    "ready": lambda ctx: ["joined: wait for the caller"],
    "execve": _execve,
}


def describe(step: str, ctx: InitContext) -> list[str]:
    fn = _LINES.get(step)
    return [line for line in fn(ctx) if line] if fn is not None else []
