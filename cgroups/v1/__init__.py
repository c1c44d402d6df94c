"""The cgroup v1 driver: one directory per hierarchy (cpu, cpuacct, cpuset, memory,
pids, blkio, freezer, devices), used on pure v1 hosts and on hybrid hosts, whose
cgroup2 mount holds no controller.

Co-mounted controllers (cpu,cpuacct on many hosts) share one directory; pyctr
creates, joins and removes each distinct directory once.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path

from pyctr.errors import PyctrError

from .. import fs
from ..detect import Layout
from ..manager import WAIT_EMPTY, Manager, Stats
from ..resources import Resources
from . import blkio, cpu, cpuset, devices, freezer, memory, pids

CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "freezer", "devices")
_NEEDS = {"io": "blkio"}


class V1Manager(Manager):
    def __init__(self, path: str, layout: Layout) -> None:
        super().__init__(path, layout)
        self.dirs: dict[str, Path] = {c: layout.v1[c] / self.rel
                                      for c in CONTROLLERS if c in layout.v1}
        if not self.dirs:
            raise PyctrError("no cgroup v1 controller is mounted", step="cgroup")

    def _unique(self) -> list[Path]:
        """Each distinct cgroup directory once (co-mounted controllers share one)."""
        seen: list[Path] = []
        for d in self.dirs.values():
            if d not in seen:
                seen.append(d)
        return seen

    def _dir(self, ctrl: str) -> Path:
        try:
            return self.dirs[ctrl]
        except KeyError:
            raise PyctrError(f"the {ctrl} cgroup controller is not mounted", step="cgroup",
                             hint="mount it (mount -t cgroup -o {ctrl} cgroup "
                                  f"/sys/fs/cgroup/{ctrl}) or drop the limit") from None

    # ---- create ----------------------------------------------------------

    def create(self, resources: Resources | None = None) -> None:
        if resources is not None:
            for c in sorted(resources.controllers()):
                self._dir(_NEEDS.get(c, c))
        for leaf in self._unique():
            mount = Path(*leaf.parts[: len(leaf.parts) - len(self.rel.parts)])
            is_cpuset = self.dirs.get("cpuset") == leaf
            d = mount
            for part in self.rel.parts:
                d = d / part
                fs.mkdir(d)
                if is_cpuset:
                    cpuset.init_from_parent(d)

    # ---- processes -------------------------------------------------------

    def add(self, pid: int) -> None:
        for d in self._unique():
            fs.write(d / "cgroup.procs", pid, hints={
                errno.ENOSPC: f"{d}: cpuset.cpus or cpuset.mems is empty",
                errno.ESRCH: f"no process {pid}",
            })

    def add_self(self) -> None:
        """Write 0 (the calling thread) to each hierarchy's ``tasks``.

        A thread moving itself skips the threadgroup lock (and its RCU grace
        period, ~20 ms on this kernel) that cgroup.procs takes; with one
        thread, moving the thread moves the process.
        """
        import threading

        if threading.active_count() != 1:
            raise PyctrError("add_self needs a single-threaded process",
                             step="cgroup", path=str(self.path),
                             hint="use add(pid) from another process instead")
        for d in self._unique():
            fs.write(d / "tasks", 0, hints={
                errno.ENOSPC: f"{d}: cpuset.cpus or cpuset.mems is empty",
            })

    def pids(self) -> list[int]:
        found: set[int] = set()
        for d in self._unique():
            found.update(fs.read_pids(d / "cgroup.procs"))
        return sorted(found)

    @property
    def exists(self) -> bool:
        return any(d.is_dir() for d in self._unique())

    # ---- limits and stats ------------------------------------------------

    def apply(self, resources: Resources) -> None:
        for c in sorted(resources.controllers()):
            self._dir(_NEEDS.get(c, c))
        if "memory" in resources.controllers():
            memory.apply(self.dirs["memory"], resources)
        if "cpu" in resources.controllers():
            cpu.apply(self.dirs["cpu"], resources)
        if "cpuset" in resources.controllers():
            cpuset.apply(self.dirs["cpuset"], resources)
        if "pids" in resources.controllers():
            pids.apply(self.dirs["pids"], resources)
        if "io" in resources.controllers():
            blkio.apply(self.dirs["blkio"], resources)
        if resources.devices:
            devices.apply(self._dir("devices"), resources)

    def stats(self) -> Stats:
        values: dict = {}
        for ctrl, fn in (("cpuacct", cpu.stats), ("memory", memory.stats),
                         ("pids", pids.stats), ("blkio", blkio.stats)):
            if ctrl in self.dirs:
                values.update(fn(self.dirs[ctrl]))
        return Stats(**values)

    def oom_killed(self) -> bool:
        return memory.oom_kills(self._dir("memory")) > 0

    # ---- freezer and kill ------------------------------------------------

    @property
    def frozen(self) -> bool:
        d = self.dirs.get("freezer")
        return d is not None and freezer.state(d) == "FROZEN"

    def freeze(self) -> None:
        freezer.set_state(self._dir("freezer"), "FROZEN")

    def thaw(self) -> None:
        freezer.set_state(self._dir("freezer"), "THAWED")

    def kill_all(self) -> None:
        """Freeze (no fork can race the kill), SIGKILL every pid, thaw so they die; repeat."""
        if "freezer" not in self.dirs:
            self._kill_loop()
            return
        deadline = time.monotonic() + WAIT_EMPTY
        while (left := self.pids()):
            if time.monotonic() > deadline:
                raise PyctrError(f"cgroup {self.path} still has processes {left[:5]}",
                                 step="cgroup", path=self.path)
            self.freeze()
            for pid in self.pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.thaw()
            self.wait_empty()

    def _rmdir(self) -> None:
        for leaf in self._unique():
            fs.rmdir(leaf)
            # inner cgroups of a deeper path go too, if empty; pyctr's parent stays
            d = leaf.parent
            for _ in range(len(self.rel.parts) - 2):
                try:
                    fs.rmdir(d)
                except PyctrError:
                    break
                d = d.parent
