"""The cgroup v2 driver: one unified hierarchy, controllers enabled top-down.

v2's rules, as the kernel enforces them (Documentation/admin-guide/cgroup-v2.rst):
* a controller works in a cgroup only if its parent lists it in
  cgroup.subtree_control, and it can be listed there only if the
  grandparent does — so enabling goes from the top down;
* "no internal processes": a cgroup (other than the root) with controllers
  in its subtree_control cannot hold processes — processes live in leaves;
* the root's subtree_control belongs to the host (systemd sets it): pyctr
  checks it and explains, never writes it.
"""

from __future__ import annotations

import errno
import time
from pathlib import Path

from pyctr.errors import PyctrError

from .. import fs
from ..detect import Layout
from ..manager import WAIT_EMPTY, Manager, Stats
from ..resources import Resources
from . import cpu, cpuset, io, memory, pids

# kernel order; the ones every container gets (stats, OOM, pids) and the optional ones
ORDER = ("cpuset", "cpu", "io", "memory", "pids")
BASE = frozenset({"cpu", "memory", "pids"})

_NO_INTERNAL = ("cgroup v2 allows controllers only in cgroups without processes of their own"
                " (the no-internal-processes rule): move the processes to a leaf cgroup")


class V2Manager(Manager):
    def __init__(self, path: str, layout: Layout) -> None:
        super().__init__(path, layout)
        if layout.unified is None:
            raise PyctrError("no cgroup2 hierarchy is mounted", step="cgroup")
        self.root: Path = layout.unified
        self.dir: Path = self.root / self.rel

    # ---- create ----------------------------------------------------------

    def _root_subtree(self) -> set[str]:
        return set(fs.read(self.root / "cgroup.subtree_control").split())

    def controllers_to_enable(self, resources: Resources | None = None) -> list[str]:
        """The controllers to enable below the root, in kernel order; raise if the host lacks one."""
        need = set(BASE) | (resources.controllers() if resources else set())
        available = set(fs.read(self.root / "cgroup.controllers").split())
        missing = sorted(need - available)
        if missing:
            raise PyctrError(
                f"cgroup controller {' '.join(missing)} is not available in "
                f"{self.root}/cgroup.controllers", step="cgroup",
                path=str(self.root / "cgroup.controllers"),
                hint="the kernel lacks it or a v1 hierarchy holds it")
        enabled = self._root_subtree()
        off = sorted(need - enabled)
        if off:
            plus = " ".join("+" + c for c in off)
            raise PyctrError(
                f"cgroup controller {' '.join(off)} is not enabled in "
                f"{self.root}/cgroup.subtree_control", step="cgroup",
                path=str(self.root / "cgroup.subtree_control"),
                hint=f"the root's subtree_control belongs to the host; enable it once with "
                     f"echo '{plus}' > {self.root}/cgroup.subtree_control")
        return [c for c in ORDER if c in need or (c in enabled and c in available)]

    def create(self, resources: Resources | None = None) -> None:
        ctrls = self.controllers_to_enable(resources)
        d = self.root
        parts = self.rel.parts
        for i, part in enumerate(parts):
            d = d / part
            fs.mkdir(d)
            if i < len(parts) - 1:
                self._enable(d, ctrls)

    def _enable(self, d: Path, ctrls: list[str]) -> None:
        """Enable controllers in an inner cgroup pyctr owns, one write each (the error names it)."""
        have = set(fs.read(d / "cgroup.subtree_control").split())
        for c in ctrls:
            if c not in have:
                fs.write(d / "cgroup.subtree_control", f"+{c}", append=True,
                         hints={errno.EBUSY: f"{d} has processes: " + _NO_INTERNAL,
                                errno.ENOENT: f"{c} is not enabled in the parent of {d}"})

    # ---- processes -------------------------------------------------------

    def add(self, pid: int) -> None:
        sub = self.dir / "cgroup.subtree_control"
        if sub.exists() and fs.read(sub):
            raise PyctrError(f"cannot add pid {pid} to {self.dir}: it enables controllers "
                             "for children", step="cgroup", path=str(sub), errno=errno.EBUSY,
                             hint=_NO_INTERNAL)
        fs.write(self.dir / "cgroup.procs", pid, hints={
            errno.EBUSY: _NO_INTERNAL,
            errno.EOPNOTSUPP: "the cgroup is threaded or its domain is invalid: "
                              "processes can join only a domain cgroup",
            errno.ESRCH: f"no process {pid}",
        })

    def pids(self) -> list[int]:
        return fs.read_pids(self.dir / "cgroup.procs")

    @property
    def exists(self) -> bool:
        return self.dir.is_dir()

    # ---- limits and stats ------------------------------------------------

    def apply(self, resources: Resources) -> None:
        have = set(fs.read(self.dir / "cgroup.controllers").split())
        missing = sorted(resources.controllers() - have)
        if missing:
            raise PyctrError(
                f"cgroup controller {' '.join(missing)} is not enabled for {self.dir}",
                step="cgroup", path=str(self.dir / "cgroup.controllers"),
                hint=f"create the cgroup with these limits (create(resources)) so the parent's "
                     f"cgroup.subtree_control enables {' '.join(missing)}")
        for mod in (memory, cpu, cpuset, pids, io):
            mod.apply(self.dir, resources)

    def stats(self) -> Stats:
        values: dict = {}
        for mod in (cpu, memory, pids, io):
            try:
                values.update(mod.stats(self.dir))
            except PyctrError as exc:
                if exc.errno != errno.ENOENT:
                    raise
        return Stats(**values)

    def oom_killed(self) -> bool:
        return memory.oom_kills(self.dir) > 0

    # ---- freezer and kill ------------------------------------------------

    def _events(self) -> dict[str, int]:
        return fs.read_keyed(self.dir / "cgroup.events")

    @property
    def frozen(self) -> bool:
        return self._events().get("frozen", 0) == 1

    def _set_frozen(self, on: bool) -> None:
        fs.write(self.dir / "cgroup.freeze", "1" if on else "0")
        deadline = time.monotonic() + WAIT_EMPTY
        while self.frozen != on:
            if time.monotonic() > deadline:
                raise PyctrError(f"cgroup {self.dir} did not become "
                                 f"{'frozen' if on else 'thawed'}", step="cgroup",
                                 path=str(self.dir / "cgroup.events"))
            time.sleep(0.005)

    def freeze(self) -> None:
        self._set_frozen(True)

    def thaw(self) -> None:
        self._set_frozen(False)

    def kill_all(self) -> None:
        """cgroup.kill (5.14+) kills every process at once, forks included; else the loop."""
        if (self.dir / "cgroup.kill").exists():
            fs.write(self.dir / "cgroup.kill", "1")
            self.wait_empty()
        else:
            self._kill_loop()

    def _rmdir(self) -> None:
        d = self.dir
        owned = self.root / self.rel.parts[0]
        fs.rmdir(d)
        # inner cgroups of a deeper path go too, if empty; pyctr's parent stays
        d = d.parent
        while d != owned and len(d.parts) > len(owned.parts):
            try:
                fs.rmdir(d)
            except PyctrError:
                break
            d = d.parent
