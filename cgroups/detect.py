"""Which cgroup layout the host has: pure v2, pure v1 or hybrid.

Read from /proc/self/mountinfo, the kernel's own list of mounts (fields:
id parent major:minor root mountpoint options ... - fstype source
superoptions).  A v1 hierarchy is an fstype ``cgroup`` mount whose super
options name its controllers (``rw,cpu,cpuacct``; ``name=systemd`` is a
named hierarchy with no controller).  The v2 hierarchy is an fstype
``cgroup2`` mount; its usable controllers are those listed in the root's
cgroup.controllers.  A hybrid host has both: v1 controllers and a cgroup2
mount (usually /sys/fs/cgroup/unified) that holds no controller at all, so
pyctr uses v1 for limits there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pyctr.errors import PyctrError

DEFAULT_ROOT = Path("/sys/fs/cgroup")

# the v1 controllers pyctr knows; others (net_cls, perf_event, …) are listed but unused
V1_CONTROLLERS = ("blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "hugetlb",
                  "memory", "net_cls", "net_prio", "perf_event", "pids", "rdma", "misc")


@dataclass(frozen=True)
class Layout:
    """The host's cgroup hierarchies.

    kind: "v2" (only cgroup2), "v1" (only v1 hierarchies) or "hybrid" (both).
    unified: the cgroup2 mount point, if any.
    v1: v1 controller → mount point (co-mounted controllers share one).
    v2_controllers: the controllers in the cgroup2 root's cgroup.controllers.
    """

    kind: str
    unified: Path | None = None
    v1: dict[str, Path] = field(default_factory=dict)
    v2_controllers: frozenset[str] = frozenset()

    @property
    def driver(self) -> str:
        """Which Manager drives limits here: "v2" only on a pure v2 host."""
        return "v2" if self.kind == "v2" else "v1"

    @property
    def controllers(self) -> frozenset[str]:
        """The controllers pyctr can use for limits on this host."""
        return self.v2_controllers if self.driver == "v2" else frozenset(self.v1)


def parse_mountinfo(text: str) -> list[tuple[str, str, str, str]]:
    """(mountpoint, root, fstype, superoptions) of every cgroup/cgroup2 mount in mountinfo text."""
    out = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        lf = left.split()
        rf = right.split()
        if len(lf) < 5 or len(rf) < 3:
            continue
        fstype = rf[0]
        if fstype not in ("cgroup", "cgroup2"):
            continue
        mountpoint = lf[4].replace("\\040", " ")
        out.append((mountpoint, lf[3], fstype, rf[2]))
    return out


def _rebase(mountpoint: str, root: Path) -> Path:
    """A mount point from mountinfo, moved under ``root`` when a test gives a fake tree."""
    mp = Path(mountpoint)
    if root == DEFAULT_ROOT:
        return mp
    try:
        return root / mp.relative_to(DEFAULT_ROOT)
    except ValueError:
        return mp


def detect(root: Path = DEFAULT_ROOT, mountinfo: str | None = None) -> Layout:
    """The layout of the cgroup hierarchies mounted at (or under) ``root``.

    ``mountinfo`` is the text of /proc/self/mountinfo (read when None); with
    a ``root`` other than /sys/fs/cgroup, mount points under /sys/fs/cgroup
    are taken relative to ``root`` (a fake cgroupfs tree in a test).
    """
    if mountinfo is None:
        with open("/proc/self/mountinfo") as f:
            mountinfo = f.read()
    unified: Path | None = None
    v1: dict[str, Path] = {}
    for mountpoint, _mroot, fstype, superopts in parse_mountinfo(mountinfo):
        mp = _rebase(mountpoint, root)
        if fstype == "cgroup2":
            # the one at the root wins (pure v2); else the first (hybrid's /unified)
            if unified is None or mp == root:
                unified = mp
            continue
        for opt in superopts.split(","):
            if opt in V1_CONTROLLERS and opt not in v1:
                v1[opt] = mp
    if not v1 and unified is None:
        raise PyctrError("no cgroup filesystem is mounted", step="cgroup",
                         path="/proc/self/mountinfo",
                         hint="mount cgroup2 on /sys/fs/cgroup (mount -t cgroup2 none /sys/fs/cgroup)")
    v2_controllers: frozenset[str] = frozenset()
    if unified is not None:
        try:
            v2_controllers = frozenset((unified / "cgroup.controllers").read_text().split())
        except OSError:
            v2_controllers = frozenset()
    if v1 and unified is not None:
        kind = "hybrid"
    elif v1:
        kind = "v1"
    else:
        kind = "v2"
    return Layout(kind=kind, unified=unified, v1=v1, v2_controllers=v2_controllers)


def describe(layout: Layout) -> dict[str, str]:
    """What `pyctr info` shows about cgroups, in docker info's words where they exist."""
    info = {
        "Cgroup Driver": "cgroupfs",
        "Cgroup Version": "2" if layout.driver == "v2" else "1",
        "Cgroup Layout": layout.kind,
    }
    if layout.unified is not None:
        ctrls = " ".join(sorted(layout.v2_controllers)) or "none"
        info["Cgroup2 Mount"] = f"{layout.unified} (controllers: {ctrls})"
    if layout.v1:
        info["Cgroup v1 Controllers"] = " ".join(
            f"{c}={p}" for c, p in sorted(layout.v1.items()))
    return info


def describe_text(layout: Layout) -> str:
    """describe() as ``Key: value`` lines."""
    return "\n".join(f"{k}: {v}" for k, v in describe(layout).items())
