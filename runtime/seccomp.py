"""Seccomp: which syscalls a container may make — modelled on Docker's default profile.

``default_profile`` writes the policy into the spec as ``linux.seccomp`` in
OCI form, so the engine or a user can change it; the init's ``seccomp``
step applies whatever the spec says, through libseccomp (pyseccomp), and
no section means no filter.  The default action is EPERM: a syscall not
allowed below fails as if the caller lacked the privilege, which programs
already handle.  Every refused one has its reason in ``REFUSED``.

mknod: CAP_MKNOD is in Docker's default capabilities, and what stops Docker
containers from making /dev/sda and writing the host's disk is the device
cgroup.  pyctr writes one on cgroup v1 (devices.deny/devices.allow); on v2
the device controller is an eBPF program, which pyctr does not load, so
there a rule here is the control: it refuses mknod/mknodat of block and
char devices, except char 0:0 (the overlayfs whiteout that unpacking needs),
on both.

libseccomp compiles the profile to a BPF program; ``program`` keeps what it
compiled in a cache (the state root's ``.seccomp``), so pyseccomp is
imported, by the init child only, the first time a profile is seen, and
a start costs a file read, not ~5 ms of compiling.  The filter is compiled
before pivot_root, while the host's libraries are reachable, and loaded
last.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import types
import zlib
from typing import Any

from . import syscalls as sc

# Everything a normal program does: files, memory, processes, time, signals,
# sockets, IPC.  Grouped for reading; order does not matter to the kernel.
_ALLOWED = """
    read write readv writev pread64 pwrite64 preadv preadv2 pwritev pwritev2 lseek _llseek
    open openat openat2 creat close close_range dup dup2 dup3 fcntl fcntl64 ioctl flock
    stat stat64 lstat lstat64 fstat fstat64 newfstatat fstatat64 statx statfs statfs64
    fstatfs fstatfs64 access faccessat faccessat2 readlink readlinkat getcwd chdir fchdir
    getdents getdents64 mkdir mkdirat rmdir rename renameat renameat2 link linkat
    symlink symlinkat unlink unlinkat truncate truncate64 ftruncate ftruncate64 fallocate
    chmod fchmod fchmodat fchmodat2 chown chown32 fchown fchown32 fchownat lchown lchown32
    umask utime utimes utimensat utimensat_time64 futimesat sync syncfs fsync fdatasync
    sync_file_range readahead fadvise64 fadvise64_64 copy_file_range sendfile sendfile64
    splice tee vmsplice name_to_handle_at
    getxattr lgetxattr fgetxattr setxattr lsetxattr fsetxattr listxattr llistxattr
    flistxattr removexattr lremovexattr fremovexattr
    inotify_init inotify_init1 inotify_add_watch inotify_rm_watch fanotify_mark
    brk mmap mmap2 munmap mremap mprotect madvise mincore msync mlock mlock2 mlockall
    munlock munlockall membarrier memfd_create memfd_secret remap_file_pages
    pkey_alloc pkey_free pkey_mprotect
    execve execveat fork vfork exit exit_group wait4 waitid waitpid kill tkill tgkill
    getpid getppid gettid getpgid getpgrp setpgid getsid setsid set_tid_address
    set_robust_list get_robust_list rseq restart_syscall prctl arch_prctl
    get_thread_area set_thread_area futex futex_time64 futex_waitv
    pidfd_open pidfd_send_signal process_mrelease seccomp capget capset
    getuid getuid32 geteuid geteuid32 getgid getgid32 getegid getegid32 getresuid
    getresuid32 getresgid getresgid32 getgroups getgroups32 setuid setuid32 setgid
    setgid32 setreuid setreuid32 setregid setregid32 setresuid setresuid32 setresgid
    setresgid32 setgroups setgroups32 setfsuid setfsuid32 setfsgid setfsgid32
    getrlimit ugetrlimit setrlimit prlimit64 getrusage getpriority setpriority
    ioprio_get ioprio_set sched_yield sched_getaffinity sched_setaffinity sched_getattr
    sched_setattr sched_getparam sched_setparam sched_getscheduler sched_setscheduler
    sched_get_priority_max sched_get_priority_min sched_rr_get_interval
    sched_rr_get_interval_time64 getcpu uname sysinfo getrandom
    time times gettimeofday clock_gettime clock_gettime64 clock_getres clock_getres_time64
    clock_nanosleep clock_nanosleep_time64 nanosleep adjtimex clock_adjtime clock_adjtime64
    alarm getitimer setitimer timer_create timer_delete timer_gettime timer_gettime64
    timer_settime timer_settime64 timer_getoverrun timerfd_create timerfd_gettime
    timerfd_gettime64 timerfd_settime timerfd_settime64
    rt_sigaction rt_sigprocmask rt_sigreturn rt_sigpending rt_sigsuspend rt_sigtimedwait
    rt_sigtimedwait_time64 rt_sigqueueinfo rt_tgsigqueueinfo sigaltstack sigreturn
    sigprocmask signalfd signalfd4 pause
    poll ppoll ppoll_time64 select _newselect pselect6 pselect6_time64 epoll_create
    epoll_create1 epoll_ctl epoll_wait epoll_pwait epoll_pwait2 eventfd eventfd2
    socketpair bind connect listen accept accept4 getsockname getpeername getsockopt
    setsockopt shutdown send sendto sendmsg sendmmsg recv recvfrom recvmsg recvmmsg
    recvmmsg_time64 socketcall
    pipe pipe2 ipc shmget shmat shmdt shmctl semget semop semtimedop semtimedop_time64
    semctl msgget msgsnd msgrcv msgctl mq_open mq_unlink mq_timedsend mq_timedsend_time64
    mq_timedreceive mq_timedreceive_time64 mq_notify mq_getsetattr
    io_setup io_destroy io_submit io_cancel io_getevents io_pgetevents io_pgetevents_time64
    landlock_create_ruleset landlock_add_rule landlock_restrict_self
    ptrace process_vm_readv process_vm_writev
"""
ALLOWED = _ALLOWED.split()

# Refused (EPERM) unless a capability below is in the bounding set: the reason in one line.
REFUSED = {
    "keyctl add_key request_key": "the kernel keyring is not namespaced: keys of the host",
    "kexec_load kexec_file_load": "boots another kernel",
    "bpf": "eBPF programs read kernel memory and attach to the host's events",
    "userfaultfd": "stalls the kernel on a page fault: the classic exploit race widener",
    "io_uring_setup io_uring_enter io_uring_register":
        "runs file and network operations the filter never sees; a long CVE history",
    "perf_event_open": "profiles the host and leaks kernel addresses",
    "mount umount umount2 pivot_root move_mount open_tree fsopen fsconfig fsmount fspick "
    "mount_setattr": "changes the mount table the runtime set up",
    "unshare setns": "new or other namespaces: the container's walls are the runtime's",
    "clone": "only with CLONE_NEW* flags (new namespaces); plain fork/thread clones pass",
    "clone3": "its flags live in memory a filter cannot read: ENOSYS makes libc use clone",
    "sethostname setdomainname": "CAP_SYS_ADMIN's, as in Docker (the runtime sets them)",
    "quotactl quotactl_fd": "disk quotas of the host's filesystems",
    "lookup_dcookie fanotify_init": "host-wide profiling and file events",
    "syslog": "the host's kernel log",
    "acct": "process accounting for the whole host",
    "reboot": "reboots the host (or, in a pid namespace, kills it)",
    "init_module finit_module delete_module": "kernel modules are host code",
    "iopl ioperm": "raw I/O ports",
    "settimeofday stime clock_settime clock_settime64": "the clock is not namespaced",
    "vhangup": "hangs up the terminal of other sessions",
    "get_mempolicy set_mempolicy set_mempolicy_home_node mbind":
        "NUMA placement against the host's other work",
    "kcmp pidfd_getfd process_madvise": "inspects other processes beyond ptrace's rules",
    "open_by_handle_at": "opens any inode by handle, past the rootfs (the 'shocker' escape)",
    "chroot": "only without CAP_SYS_CHROOT",
    "swapon swapoff": "host swap",
    "personality": "only the usual personas: others change address layout for exploits",
    "socket": "all but AF_VSOCK (40), which talks to the hypervisor",
    "mknod mknodat": "block and char devices other than 0:0 (see the module docstring)",
    "nfsservctl uselib _sysctl create_module get_kernel_syms query_module vm86 vm86old "
    "ustat sysfs": "obsolete, with a history of bugs",
}

# allowed when the capability is in the bounding set (Docker's rule)
BY_CAPABILITY = {
    "CAP_SYS_ADMIN": "bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick "
                     "lookup_dcookie mount mount_setattr move_mount open_tree perf_event_open "
                     "quotactl quotactl_fd setdomainname sethostname setns syslog umount "
                     "umount2 unshare pivot_root",
    "CAP_SYS_BOOT": "reboot",
    "CAP_SYS_CHROOT": "chroot",
    "CAP_SYS_MODULE": "delete_module init_module finit_module",
    "CAP_SYS_PACCT": "acct",
    "CAP_SYS_PTRACE": "kcmp pidfd_getfd process_madvise",
    "CAP_SYS_RAWIO": "iopl ioperm",
    "CAP_SYS_TIME": "settimeofday stime clock_settime clock_settime64",
    "CAP_SYS_TTY_CONFIG": "vhangup",
    "CAP_SYS_NICE": "get_mempolicy mbind set_mempolicy set_mempolicy_home_node",
    "CAP_SYSLOG": "syslog",
    "CAP_BPF": "bpf",
    "CAP_PERFMON": "perf_event_open",
    "CAP_DAC_READ_SEARCH": "open_by_handle_at",
}

CLONE_NAMESPACES = 0x7E020000  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET
PERSONAS = (0, 8, 0x20000, 0x20008, 0xFFFFFFFF)  # LINUX, +UNAME26, +READ_IMPLIES_EXEC, query
AF_VSOCK = 40
S_IFMT = 0o170000
ENOSYS = 38
EPERM = 1

# The native ABI only: Docker adds the 32-bit ones (x86, x32, arm), but each
# triples the time libseccomp takes to compile the filter (~20 ms instead of
# ~1 ms here, at every start).  A 32-bit program is killed (SIGSYS); list
# SCMP_ARCH_X86 in the spec to run one.
ARCHES = {"x86_64": ["SCMP_ARCH_X86_64"], "aarch64": ["SCMP_ARCH_AARCH64"]}


def _rule(names: list[str], action: str = "SCMP_ACT_ALLOW", args: list[dict] | None = None,
          errno: int | None = None) -> dict:
    rule: dict[str, Any] = {"names": names, "action": action}
    if args:
        rule["args"] = args
    if errno is not None:
        rule["errnoRet"] = errno
    return rule


def _arg(index: int, op: str, value: int, value_two: int = 0) -> dict:
    return {"index": index, "value": value, "valueTwo": value_two, "op": f"SCMP_CMP_{op}"}


def _mknod_rules() -> list[dict]:
    """mknod(path, mode, dev) and mknodat(dirfd, path, mode, dev): files, fifos, sockets, 0:0."""
    rules = []
    for name, mode_at in (("mknod", 1), ("mknodat", 2)):
        for kind in (0, stat.S_IFREG, stat.S_IFIFO, stat.S_IFSOCK):
            rules.append(_rule([name], args=[_arg(mode_at, "MASKED_EQ", S_IFMT, kind)]))
        rules.append(_rule([name], args=[_arg(mode_at, "MASKED_EQ", S_IFMT, stat.S_IFCHR),
                                         _arg(mode_at + 1, "EQ", 0)]))
    return rules


def default_profile(bounding: list[str]) -> dict:
    """linux.seccomp for a process whose bounding set is ``bounding`` (Docker's rule)."""
    allowed = list(ALLOWED)
    for cap, names in BY_CAPABILITY.items():
        if cap in bounding:
            allowed += [n for n in names.split() if n not in allowed]
    rules = [_rule(allowed)]
    rules += [_rule(["personality"], args=[_arg(0, "EQ", p)]) for p in PERSONAS]
    rules.append(_rule(["socket"], args=[_arg(0, "NE", AF_VSOCK)]))
    if "CAP_SYS_ADMIN" not in bounding:
        rules.append(_rule(["clone"], args=[_arg(0, "MASKED_EQ", CLONE_NAMESPACES, 0)]))
        rules.append(_rule(["clone3"], "SCMP_ACT_ERRNO", errno=ENOSYS))
    rules += _mknod_rules()
    return {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": EPERM,
            "architectures": ARCHES.get(os.uname().machine, []), "syscalls": rules}


ACTIONS = ("SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD",
           "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_TRAP", "SCMP_ACT_LOG", "SCMP_ACT_TRACE")
OPS = ("SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE",
       "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ")
ARCH_NAMES = ("X86", "X86_64", "X32", "ARM", "AARCH64", "MIPS", "MIPS64", "MIPS64N32",
              "MIPSEL", "MIPSEL64", "MIPSEL64N32", "PPC", "PPC64", "PPC64LE", "S390", "S390X",
              "PARISC", "PARISC64", "RISCV64")


def problems(profile: Any) -> list[tuple[str, str, Any]]:
    """What is wrong with a linux.seccomp, as (field, what it must be, the value) — for load_spec."""
    if not isinstance(profile, dict):
        return [("linux.seccomp", "an object", profile)]
    found = []
    if profile.get("defaultAction") not in ACTIONS:
        found.append(("linux.seccomp.defaultAction", "one of " + " ".join(ACTIONS),
                      profile.get("defaultAction")))
    for arch in profile.get("architectures") or []:
        if not isinstance(arch, str) or arch.removeprefix("SCMP_ARCH_") not in ARCH_NAMES:
            found.append(("linux.seccomp.architectures", "SCMP_ARCH_* names", arch))
    for i, rule in enumerate(profile.get("syscalls") or []):
        where = f"linux.seccomp.syscalls[{i}]"
        if not isinstance(rule, dict):
            found.append((where, "an object", rule))
            continue
        names = rule.get("names")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            found.append((f"{where}.names", "a list of syscall names", names))
        if rule.get("action") not in ACTIONS:
            found.append((f"{where}.action", "one of " + " ".join(ACTIONS), rule.get("action")))
        for j, arg in enumerate(rule.get("args") or []):
            if not isinstance(arg, dict) or arg.get("op") not in OPS \
                    or not isinstance(arg.get("index"), int) or not 0 <= arg["index"] <= 5:
                found.append((f"{where}.args[{j}]", "{index 0-5, value, op SCMP_CMP_*}", arg))
    return found


# ---- applying a profile (the init child only) -------------------------------

def preload() -> Any:
    """Import pyseccomp, which dlopens libseccomp: before pivot_root, while the host is visible.

    pyseccomp finds libc and libseccomp with ctypes.util.find_library,
    which imports subprocess and runs ``ldconfig -p`` twice — about 10 ms
    at every container start.  Their sonames are part of the ABI, so a
    stand-in answers for the length of the import.
    """
    if "pyseccomp" in sys.modules:
        return sys.modules["pyseccomp"]
    import ctypes

    real = sys.modules.get("ctypes.util")
    if real is None:
        stub = types.ModuleType("ctypes.util")
        stub.find_library = {"c": "libc.so.6", "seccomp": "libseccomp.so.2"}.get  # type: ignore
        sys.modules["ctypes.util"] = stub
        ctypes.util = stub  # type: ignore[attr-defined]
    try:
        import pyseccomp
    finally:
        if real is None:
            del sys.modules["ctypes.util"]
            del ctypes.util  # type: ignore[attr-defined]
    return pyseccomp


def _action(lib: Any, name: str, errno: int | None) -> int:
    simple = {"SCMP_ACT_ALLOW": lib.ALLOW, "SCMP_ACT_KILL": lib.KILL_THREAD,
              "SCMP_ACT_KILL_THREAD": lib.KILL_THREAD, "SCMP_ACT_KILL_PROCESS": lib.KILL_PROCESS,
              "SCMP_ACT_TRAP": lib.TRAP, "SCMP_ACT_LOG": lib.LOG}
    if name in simple:
        return simple[name]
    if name == "SCMP_ACT_ERRNO":
        return lib.ERRNO(EPERM if errno is None else errno)
    if name == "SCMP_ACT_TRACE":
        return lib.TRACE(EPERM if errno is None else errno)
    raise ValueError(f"unknown seccomp action {name!r}")


def _conditions(lib: Any, args: list[dict]) -> list[list[Any]]:
    """libseccomp ANDs a rule's conditions but takes one per argument: the same index twice
    becomes one rule per condition (what runc does)."""
    conds = [lib.Arg(a["index"], getattr(lib, a["op"].removeprefix("SCMP_CMP_")),
                     a.get("value", 0), a.get("valueTwo", 0)) for a in args]
    indexes = [a["index"] for a in args]
    if len(set(indexes)) == len(indexes):
        return [conds]
    return [[c] for c in conds]


def build(profile: dict) -> Any:
    """A pyseccomp filter from an OCI ``linux.seccomp``; unknown syscall names are skipped."""
    lib = preload()
    default = _action(lib, profile["defaultAction"], profile.get("defaultErrnoRet"))
    flt = lib.SyscallFilter(default)
    flt.set_attr(lib.Attr.CTL_NNP, 0)  # no_new_privs is the spec's own choice
    for arch in profile.get("architectures") or []:
        code = getattr(lib.Arch, arch.removeprefix("SCMP_ARCH_"))
        if not flt.exist_arch(code):
            flt.add_arch(code)
    rules = profile.get("syscalls") or []
    # libseccomp keeps the first of two rules for one syscall; a spec that
    # adds {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"} after the
    # allow-list means the later one: the last rule without args decides.
    last = {name: i for i, rule in enumerate(rules) if not rule.get("args")
            for name in rule["names"]}
    for i, rule in enumerate(rules):
        action = _action(lib, rule["action"], rule.get("errnoRet"))
        for name in rule["names"]:
            if last.get(name, i) > i or action == default:
                continue  # overridden later, or the default anyway (libseccomp refuses those)
            nr = lib.resolve_syscall(lib.Arch.NATIVE, name)
            if nr == -1:
                continue  # not a syscall libseccomp knows (newer than it, or a typo)
            for conds in _conditions(lib, rule.get("args") or []):
                flt.add_rule(action, nr, *conds)
    return flt


def compile_bpf(profile: dict) -> bytes:
    """The profile as the BPF program libseccomp generates for it."""
    flt = build(profile)
    r, w = os.pipe()  # a program has at most 4096 instructions: 32 KiB, less than a pipe holds
    try:
        with open(w, "wb", closefd=False) as out:
            flt.export_bpf(out)
        os.close(w)
        w = -1
        chunks = []
        while chunk := os.read(r, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(r)
        if w != -1:
            os.close(w)


_CACHE_MAGIC = b"pyctr-seccomp-bpf-1\n"


def program(profile: dict, cache_dir: str | None = None) -> bytes:
    """The profile's BPF program: from ``cache_dir`` if compiled before, else compiled and stored.

    A cache file holds the profile's JSON next to its program and is used
    only if that JSON is byte for byte ours (its name is just a checksum).
    """
    text = json.dumps(profile, separators=(",", ":")).encode()
    head = _CACHE_MAGIC + len(text).to_bytes(4, "little") + text
    path = None
    if cache_dir:
        path = os.path.join(cache_dir, f"{zlib.crc32(text):08x}-{os.uname().machine}.bpf")
        try:
            with open(path, "rb") as f:
                data = f.read()
            if data.startswith(head) and len(data) > len(head):
                return data[len(head):]
        except OSError:
            pass
    bpf = compile_bpf(profile)
    if path:
        _store(path, head + bpf)
    return bpf


def _store(path: str, data: bytes) -> None:
    """Best effort (a read-only state root only costs the next start a compile)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def load(profile: dict, cache_dir: str | None = None) -> None:
    """Compile (or fetch) and load the filter: it applies to us and everything we exec."""
    sc.seccomp_filter(program(profile, cache_dir))
