"""Init steps that take privilege away, after pivot_root: rlimits, user, capabilities, no_new_privs, seccomp.

The order matters: rlimits while still root (lowering is always allowed),
then the user (PR_SET_KEEPCAPS so setuid keeps the permitted set the next
step needs), then capabilities (needs CAP_SETPCAP to drop from the bounding
set), then no_new_privs (after which setuid binaries gain nothing), then
seccomp, last because it forbids what the steps before need.  Without
no_new_privs, loading a filter needs CAP_SYS_ADMIN, so then it is loaded
before the user and capabilities steps instead (as runc does).
"""

from __future__ import annotations

import errno
import resource
from typing import TYPE_CHECKING

from pyctr.errors import ContainerInitError

from .spec import CAPABILITIES, RLIMITS

if TYPE_CHECKING:
    from .init import InitContext


def set_rlimits(ctx: InitContext) -> None:
    """process.rlimits via setrlimit(2)."""
    for rl in ctx.spec["process"].get("rlimits", []):
        kind = RLIMITS[rl["type"]]
        try:
            ctx.sys.setrlimit(kind, rl["soft"], rl["hard"])
        except (OSError, ValueError) as exc:
            current = resource.getrlimit(kind)[1]
            err = getattr(exc, "errno", None) or errno.EPERM
            raise ContainerInitError(
                f"setrlimit {rl['type']} to {rl['soft']}/{rl['hard']} failed "
                f"(current hard limit {current})", syscall="setrlimit", errno=err,
                hint="raising a hard limit needs CAP_SYS_RESOURCE, which root on this host "
                     "lacks; ask for at most the current hard limit") from None


def set_user(ctx: InitContext) -> None:
    """setgroups, setgid, setuid — keeping the permitted capabilities across setuid."""
    user = ctx.spec["process"].get("user", {})
    uid, gid = user.get("uid", 0), user.get("gid", 0)
    ctx.sys.set_keepcaps(True)
    ctx.sys.setgroups(list(user.get("additionalGids", [])))
    ctx.sys.setgid(gid)
    ctx.sys.setuid(uid)


def last_cap() -> int:
    """The kernel's highest capability number (newer kernels know more than our table)."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        return max(CAPABILITIES.values())


def _nums(names: list[str]) -> list[int]:
    return sorted(CAPABILITIES[n] for n in names)


def set_capabilities(ctx: InitContext) -> None:
    """Bounding set first (needs CAP_SETPCAP effective), then the exact sets, ambient cleared.

    After setuid to a non-root user the effective set is empty (keepcaps
    only keeps the permitted one), so it is first raised back to the
    permitted set to be allowed to drop from the bounding set.
    """
    caps = ctx.spec["process"].get("capabilities", {})
    ctx.sys.raise_effective()
    bounding = set(_nums(caps.get("bounding", [])))
    for cap in range(last_cap() + 1):
        if cap not in bounding:
            ctx.sys.capbset_drop(cap)
    ctx.sys.capset(_nums(caps.get("effective", [])), _nums(caps.get("permitted", [])),
                   _nums(caps.get("inheritable", [])))
    ctx.sys.clear_ambient()
    for cap in _nums(caps.get("ambient", [])):
        ctx.sys.ambient_raise(cap)
    ctx.unprivileged = True


def set_no_new_privs(ctx: InitContext) -> None:
    """PR_SET_NO_NEW_PRIVS: execve can never grant more (setuid bits, file caps are ignored)."""
    if ctx.spec["process"].get("noNewPrivileges", False):
        ctx.sys.set_no_new_privs()


def compile_seccomp(ctx: InitContext) -> None:
    """linux.seccomp to BPF now, while the host's libseccomp (or the cache) is reachable."""
    profile = ctx.spec.get("linux", {}).get("seccomp")
    if profile:
        ctx.seccomp_program = ctx.sys.seccomp_program(profile, ctx.seccomp_cache)


def set_seccomp(ctx: InitContext) -> None:
    """Load the spec's filter (no linux.seccomp, no filter); see seccomp.py."""
    if ctx.seccomp_program and ctx.spec["process"].get("noNewPrivileges", False):
        ctx.sys.seccomp(ctx.seccomp_program)


def set_seccomp_privileged(ctx: InitContext) -> None:
    """Without no_new_privs the kernel wants CAP_SYS_ADMIN for a filter: load it while we have it."""
    if ctx.seccomp_program and not ctx.spec["process"].get("noNewPrivileges", False):
        ctx.sys.seccomp(ctx.seccomp_program)
