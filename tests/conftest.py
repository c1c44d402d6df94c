"""Shared test plumbing: markers for what a test needs, and the leak check.

Every test that touches the kernel (marker ``root``) runs inside
``kernel_leak_check``: it snapshots mounts, links, network namespaces,
pyctr cgroups and processes before the test and fails the test if any new
one is still there afterwards.  Tests wait on state, never on sleep.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from pathlib import Path

import pytest

IS_ROOT = os.geteuid() == 0


def pytest_collection_modifyitems(config, items):
    for item in items:
        root = item.get_closest_marker("root")
        if root is not None and not IS_ROOT:
            why = root.kwargs.get("reason", "namespaces, mounts and overlayfs")
            item.add_marker(pytest.mark.skip(reason=f"needs root: {why}"))
        for tool in getattr(item.get_closest_marker("tools"), "args", ()) or ():
            if shutil.which(tool) is None:
                item.add_marker(pytest.mark.skip(
                    reason=f"needs {tool} on PATH (scripts/setup.sh installs it)"))


# ---- the leak check -------------------------------------------------------

def _mounts() -> set[tuple[str, str]]:
    out = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            out.add((parts[0], parts[4]))  # mount id, mount point
    return out


def _links() -> set[str]:
    """Every link but pyctr's network bridges, which stay while their network exists."""
    return {name for name in os.listdir("/sys/class/net")
            if not (name.startswith("pyctr") and os.path.isdir(f"/sys/class/net/{name}/bridge"))}


def _netns() -> set[str]:
    try:
        return set(os.listdir("/run/netns"))
    except FileNotFoundError:
        return set()


def _pyctr_cgroups() -> set[str]:
    found = set()
    base = Path("/sys/fs/cgroup")
    # v1 and hybrid: one hierarchy per controller below base; pure v2: base itself
    for hier in [base, *(base.iterdir() if base.is_dir() else ())]:
        for sub in ("pyctr", "pyctr-test"):
            p = hier / sub
            if p.is_dir():  # the parent itself stays, as docker's /docker does
                for dirpath, dirnames, _ in os.walk(p):
                    if dirpath != str(p):
                        found.add(dirpath)
    return found


def _ns(pid: int | str, kind: str = "pid") -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None


def _ppid(pid: str) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
        return int(data.rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _processes() -> dict[str, str]:
    """Every process with its pid namespace."""
    procs = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            procs[name] = _ns(name) or ""
    return procs


def _is_ours(pid: str, me: int) -> bool:
    seen = 0
    cur: int | None = int(pid)
    while cur and cur > 1 and seen < 64:
        if cur == me:
            return True
        cur = _ppid(str(cur))
        seen += 1
    return False


def _is_daemon(pid: str) -> bool:
    """A pyctrd the integration session runs (stopped, and checked, at the session's end)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return len(argv) > 2 and argv[1].endswith(b"/pyctrd") and argv[2] == b"--root"


def _snapshot():
    return {
        "mounts": _mounts(),
        "links": _links(),
        "netns": _netns(),
        "cgroups": _pyctr_cgroups(),
        "procs": _processes(),
    }


def _reap_orphans() -> None:
    """Runtime tests make this process a child subreaper (as `pyctr run` is): orphans
    of containers the test killed become our children; reap them, as pyctr would."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _leaks(before, host_pidns: str) -> list[str]:
    _reap_orphans()
    now = _snapshot()
    leaks = []
    for what in ("mounts", "links", "netns", "cgroups"):
        new = now[what] - before[what]
        if new:
            leaks.append(f"{what}: {sorted(new)[:5]}")
    me = os.getpid()
    stray = []
    for pid, pidns in now["procs"].items():
        if pid in before["procs"] or int(pid) == me:
            continue
        if ((pidns and pidns != host_pidns) or _is_ours(pid, me)) \
                and os.path.exists(f"/proc/{pid}") and not _is_daemon(pid):
            stray.append(pid)
    if stray:
        leaks.append(f"processes: {stray[:5]}")
    return leaks


@pytest.fixture(autouse=True)
def kernel_leak_check(request):
    """Fail a root test that leaves a mount, link, netns, cgroup or process behind."""
    if "root" not in request.keywords or not IS_ROOT:
        yield
        return
    host_pidns = _ns("self") or ""
    before = _snapshot()
    yield
    # give exiting processes a moment to be reaped (bounded wait on state)
    deadline = time.monotonic() + 5
    leaks = _leaks(before, host_pidns)
    while leaks and time.monotonic() < deadline:
        time.sleep(0.05)
        leaks = _leaks(before, host_pidns)
    if leaks:
        pytest.fail("test leaked kernel objects: " + "; ".join(leaks), pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def cgroup_parents_left_as_found():
    """pyctr's and the tests' cgroup parents made during the session go with it (when empty)."""
    def parents() -> set[Path]:
        base = Path("/sys/fs/cgroup")
        found = set()
        for hier in [base, *(base.iterdir() if base.is_dir() else ())]:
            for sub in ("pyctr", "pyctr-test"):
                if (hier / sub).is_dir():
                    found.add(hier / sub)
        return found

    before = parents() if IS_ROOT else set()
    yield
    if IS_ROOT:
        for parent in parents() - before:
            try:
                parent.rmdir()
            except OSError:
                pass  # not empty: the per-test leak check has already said which test


# ---- common fixtures ------------------------------------------------------

def _load_rootfs_maker():
    spec = importlib.util.spec_from_file_location(
        "make_busybox_rootfs", Path(__file__).parent.parent / "scripts" / "make_busybox_rootfs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_maker = _load_rootfs_maker()
BUSYBOX = _maker.BUSYBOX


@pytest.fixture
def busybox_rootfs(tmp_path) -> Path:
    """A minimal rootfs: static busybox with its applet links, /etc/passwd and /etc/group."""
    return make_busybox_rootfs(tmp_path / "rootfs")


def make_busybox_rootfs(root: Path) -> Path:
    if not Path(BUSYBOX).exists():
        pytest.skip("needs busybox-static (scripts/setup.sh installs it)")
    return _maker.make_rootfs(root)
