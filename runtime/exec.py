"""runc exec: start another process inside a running container.

The new process joins everything PID 1 has, nothing new is made:

1. the container's cgroup (the intermediate child moves itself in first,
   while the host's cgroupfs is still in view);
2. its namespaces, by the /proc/PID/ns/* files of PID 1, opened here
   *before* the fork and checked against PID 1's recorded start time (a
   reused pid cannot slip another process's namespaces in).  The mount
   namespace is joined last: setns(CLONE_NEWNS) also moves the caller's
   root and working directory into the container, after which no host path
   resolves;
3. then, as the grandchild (a pid namespace applies to children only), the
   privilege steps of PID 1's pipeline (init.EXEC_STEPS): user,
   capabilities, no_new_privs and the seccomp filter of the container's
   config.json, working directory, execve.

The seccomp filter is compiled here, on the host, where libseccomp and the
cache are.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pyctr.errors import Conflict

from .init import EXEC_STEPS, InitContext
from .process import await_exec, spawn_exec
from .seam import Syscalls
from .spec import load_spec
from .statedir import read_state, start_time

# config.json's namespace types, the names of their files in /proc/PID/ns, join order
JOIN_ORDER = (("ipc", "ipc"), ("uts", "uts"), ("network", "net"), ("pid", "pid"),
              ("cgroup", "cgroup"), ("mount", "mnt"))


@dataclass
class Execed:
    """The exec'd process: its host pid, and the sync socket that reports execve's fate."""

    pid: int
    sync: object
    console_fd: int | None

    def started(self) -> None:
        """Wait for execve: EOF on the sync socket (it is close-on-exec), or its error."""
        await_exec(self.sync)  # type: ignore[arg-type]


def exec_process(container_id: str, state_root: Path, process: dict, *, stdin: int = 0,
                 stdout: int = 1, stderr: int = 2, seccomp_cache: str | None = None) -> Execed:
    """Run ``process`` (an OCI process object) in container ``container_id``."""
    from . import cgroup

    state = read_state(Path(state_root), container_id)
    pid = state.get("pid") or 0
    if not pid or start_time(pid) != state.get("pidStartTime"):
        raise Conflict(f"container {container_id} is not running",
                       hint="start it first: exec joins a running container")
    cgroups_path = state.get("cgroupsPath")
    if cgroups_path and cgroup.frozen(cgroups_path):
        raise Conflict(f"container {container_id} is paused",
                       hint="unpause the container before exec")
    spec = load_spec(Path(state["bundle"]))
    kinds = {ns["type"] for ns in spec.get("linux", {}).get("namespaces", [])}
    fds = []
    try:
        for kind, name in JOIN_ORDER:
            if kind in kinds:
                fds.append((kind, os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)))
        if start_time(pid) != state.get("pidStartTime"):  # the fds may name another process's
            raise Conflict(f"container {container_id} exited meanwhile")
        linux = dict(spec.get("linux", {}),
                     namespaces=[{"type": kind, "path": f"/proc/self/fd/{fd}",
                                  "origin": f"/proc/{pid}/ns/{dict(JOIN_ORDER)[kind]}"}
                                 for kind, fd in fds])
        exec_spec = dict(spec, process=process, linux=linux)
        ctx = InitContext(spec=exec_spec, rootfs="/", bundle=state["bundle"], sys=Syscalls(),
                          seccomp_cache=seccomp_cache, steps=EXEC_STEPS)
        profile = linux.get("seccomp")
        if profile:
            ctx.seccomp_program = ctx.sys.seccomp_program(profile, seccomp_cache)
        spawned = spawn_exec(ctx, (stdin, stdout, stderr), cgroups_path)
    finally:
        for _, fd in fds:
            os.close(fd)
    return Execed(spawned.pid, spawned.sync, spawned.console_fd)
