"""One interface to a container's cgroup, whatever the host's layout.

A Manager owns one cgroup, named by an absolute cgroupsPath ("/pyctr/<id>")
taken from the root of every hierarchy — never from the caller's own
cgroup (runc nests a relative path under the caller's; on these machines
that would land inside a cgroup that belongs to someone else).  The first
component is pyctr's parent; pyctr creates cgroups only below it.
"""

from __future__ import annotations

import os
import signal
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import PurePosixPath

from pyctr.errors import PyctrError, UserError

from .detect import Layout, detect
from .resources import Resources

# parents pyctr owns directly below each hierarchy's root
OWNED_PARENTS = ("pyctr", "pyctr-test")
WAIT_EMPTY = 5.0       # seconds destroy() waits for a killed cgroup to empty


@dataclass(frozen=True)
class Stats:
    """One reading of a cgroup's counters; a limit of None means unlimited."""

    cpu_usage_ns: int = 0
    memory_usage: int = 0
    memory_limit: int | None = None
    pids_current: int = 0
    pids_limit: int | None = None
    io_read_bytes: int = 0
    io_write_bytes: int = 0


class Manager(ABC):
    """create → add → apply … stats/freeze/thaw … kill_all → destroy."""

    def __init__(self, path: str, layout: Layout) -> None:
        self.path = path
        self.layout = layout
        self.rel = PurePosixPath(path).relative_to("/")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r}, {self.layout.kind})"

    @abstractmethod
    def create(self, resources: Resources | None = None) -> None:
        """Make the cgroup (and pyctr's parent) in every hierarchy it needs."""

    @abstractmethod
    def add(self, pid: int) -> None:
        """Move a process (all its threads) into the cgroup."""

    def add_self(self) -> None:
        """Move the calling process, which must have a single thread, into the cgroup.

        Moving another process through cgroup.procs takes the kernel's
        threadgroup lock, whose first use waits for an RCU grace period
        (~20 ms here).  The drivers override this where a cheaper way
        exists; this default is the plain one.
        """
        import os

        self.add(os.getpid())

    @abstractmethod
    def apply(self, resources: Resources) -> None:
        """Write the limits; also the way `update` changes a running container's."""

    @abstractmethod
    def stats(self) -> Stats: ...

    @abstractmethod
    def oom_killed(self) -> bool:
        """Whether the OOM killer has killed a process of this cgroup."""

    @abstractmethod
    def freeze(self) -> None:
        """Stop every process (pause); returns once the kernel says frozen."""

    @abstractmethod
    def thaw(self) -> None: ...

    @property
    @abstractmethod
    def frozen(self) -> bool: ...

    @property
    @abstractmethod
    def exists(self) -> bool: ...

    @abstractmethod
    def pids(self) -> list[int]:
        """The pids of every process in the cgroup."""

    @abstractmethod
    def _rmdir(self) -> None:
        """Remove the (empty) cgroup dirs, leaving pyctr's parent."""

    def kill_all(self) -> None:
        """SIGKILL every process in the cgroup and wait until it is empty."""
        self._kill_loop()

    def _kill_loop(self) -> None:
        """SIGKILL each pid in cgroup.procs until none is left (a fork can race one pass)."""
        deadline = time.monotonic() + WAIT_EMPTY
        while True:
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if time.monotonic() > deadline:
                raise PyctrError(f"cgroup {self.path} still has processes {pids[:5]} after "
                                 "SIGKILL", step="cgroup", path=self.path,
                                 hint="a process in uninterruptible sleep (D state) cannot die"
                                      " until its I/O ends")
            time.sleep(0.01)

    def wait_empty(self, timeout: float = WAIT_EMPTY) -> None:
        """Wait (bounded, on state) until cgroup.procs is empty."""
        deadline = time.monotonic() + timeout
        while self.pids():
            if time.monotonic() > deadline:
                raise PyctrError(f"cgroup {self.path} is not empty after {timeout:.0f}s",
                                 step="cgroup", path=self.path)
            time.sleep(0.01)

    def destroy(self) -> None:
        """Kill what is left, wait until empty, rmdir the cgroup (in every hierarchy)."""
        if not self.exists:
            return
        if self.pids():
            self.kill_all()
        self.wait_empty()
        deadline = time.monotonic() + WAIT_EMPTY
        while True:
            try:
                self._rmdir()
                return
            except PyctrError as exc:
                # a killed task can linger in the css for a moment after procs is empty
                if exc.errno != 16 or time.monotonic() > deadline:  # EBUSY
                    raise
                time.sleep(0.01)


def check_path(path: str, owned_parents: tuple[str, ...] = OWNED_PARENTS) -> str:
    """An absolute cgroupsPath below one of pyctr's parents, normalised."""
    p = PurePosixPath(path)
    if not p.is_absolute() or any(part in (".", "..") for part in path.split("/")):
        raise UserError(f"cgroup path {path!r} must be absolute, without . or ..",
                        hint="pyctr names cgroups from each hierarchy's root, e.g. /pyctr/<id>")
    parts = p.parts[1:]
    if len(parts) < 2 or parts[0] not in owned_parents:
        raise UserError(f"cgroup path {path!r} is not below a pyctr parent "
                        f"({', '.join('/' + x for x in owned_parents)})",
                        hint="pyctr creates and removes cgroups only below its own parent")
    return str(p)


def open_manager(path: str, layout: Layout | None = None, *,
                 owned_parents: tuple[str, ...] = OWNED_PARENTS) -> Manager:
    """The Manager for this host: V2Manager on pure v2, V1Manager on v1 and hybrid."""
    path = check_path(path, owned_parents)
    layout = layout or detect()
    if layout.driver == "v2":
        from .v2 import V2Manager
        return V2Manager(path, layout)
    from .v1 import V1Manager
    return V1Manager(path, layout)
