"""The engine: images + runtime + cgroups = containers (what dockerd/containerd do).

``Engine`` owns the image store and the container records; its run path
(``Engine.run``) lives in pyctr/run.py.  Here: a container's state derived
from the kernel (PID and start time, the cgroup freezer), the verbs on
running containers (stats, update, pause), removal, and the clean-up of
what a crashed `pyctr run` left behind.  The runtime knows nothing of
images; the image store knows nothing of processes.
"""

from __future__ import annotations

import os
import signal
from functools import cached_property
from pathlib import Path

from pyctr.containers import Container, ContainerStore
from pyctr.errors import Conflict, PyctrError
from pyctr.fsutil import pid_start_time
from pyctr.lifecycle import LifecycleMixin
from pyctr.run import RunMixin, RunResult, docker_limits, require_overlayfs

DEFAULT_ROOT = "/var/lib/pyctr"
DEFAULT_RUN_DIR = "/run/pyctr"


def require_root(command: str | None = None) -> None:
    """Every verb that touches the root dir, mounts or namespaces needs root: say so first."""
    if os.geteuid() != 0:
        import shlex
        import sys

        command = command or " ".join(["pyctr", *map(shlex.quote, sys.argv[1:])])
        raise PyctrError("pyctr needs root", hint=f"try sudo {command}")


class Engine(RunMixin, LifecycleMixin):
    """The engine's state lives under ``root`` (images, layers, containers)."""

    def __init__(self, root: str | Path | None = None,
                 run_dir: str | Path | None = None) -> None:
        self.root = Path(root or os.environ.get("PYCTR_ROOT") or DEFAULT_ROOT)
        self.run_dir = Path(run_dir or os.environ.get("PYCTR_RUN_DIR") or DEFAULT_RUN_DIR)

    @cached_property
    def images(self):
        from pyctr.images.store import ImageStore
        require_root()
        return ImageStore(self.root)

    @cached_property
    def containers(self) -> ContainerStore:
        require_root()
        return ContainerStore(self.root)

    @cached_property
    def networks(self):
        """pyctr.netns.NetworkStore of this root (no pyroute2 import)."""
        from pyctr.netns import NetworkStore
        require_root()
        return NetworkStore(self.root)

    @property
    def runtime_root(self) -> Path:
        return self.run_dir / "runtime"

    def _event(self, action: str, c: Container, **attributes) -> None:
        from pyctr import events
        events.emit(self.run_dir, action, c, **attributes)

    def _destroy(self, c: Container) -> None:
        """The container's directory goes; a destroy event says so."""
        self.containers.remove_dir(c)
        self._event("destroy", c)
    # ---- state from the kernel ------------------------------------------------

    def cgroup(self, c: Container):
        """The Manager of the container's cgroup (None for a container without one)."""
        path = c.record.get("HostConfig", {}).get("CgroupPath")
        if not path:
            return None
        from pyctr.limits import open_container_cgroup
        return open_container_cgroup(path)

    def status(self, c: Container) -> str:
        """created | running | paused | exited: the PID and the freezer decide, not the file."""
        status = c.status
        if status == "running":
            mgr = self.cgroup(c)
            if mgr is not None and mgr.exists and mgr.frozen:
                return "paused"
        return status

    def inspect(self, c: Container) -> dict:
        """docker inspect's shape; what a container not started yet has not, is empty."""
        rec = {"NetworkSettings": {}, "Mounts": [], "LogPath": "", **c.record}
        status = self.status(c)
        rec["State"] = dict(rec["State"], Status=status, Running=status in ("running", "paused"),
                            Paused=status == "paused")
        if status == "exited" and rec["State"].get("Pid"):
            rec["State"]["Pid"] = 0
        return rec

    def _running(self, ref: str, verb: str) -> Container:
        c = self.containers.get(ref)
        status = self.status(c)
        if status not in ("running", "paused"):
            raise Conflict(f"container {c.name} is not running", hint=f"pyctr {verb} needs a "
                           "running container: pyctr ps lists them")
        return c

    # ---- limits: stats, update, pause -------------------------------------------

    def stats(self, ref: str):
        c = self._running(ref, "stats")
        return c, self.cgroup(c).stats()

    def update(self, ref: str, flags) -> Container:
        """Change the limits of a running container (docker update)."""
        from pyctr.cgroups import Resources
        from pyctr.limits import resources_from_flags

        c = self._running(ref, "update")
        base = Resources.from_oci(c.record["HostConfig"].get("Resources"))
        res, _ = resources_from_flags(flags, base=base)
        self.cgroup(c).apply(res)
        c.record["HostConfig"].update(Resources=res.to_oci(), **docker_limits(res))
        c.save()
        return c

    def pause(self, ref: str) -> Container:
        c = self._running(ref, "pause")
        if self.status(c) == "paused":
            raise Conflict(f"container {c.name} is already paused")
        self.cgroup(c).freeze()
        self._event("pause", c)
        return c

    def unpause(self, ref: str) -> Container:
        c = self._running(ref, "unpause")
        if self.status(c) != "paused":
            raise Conflict(f"container {c.name} is not paused")
        self.cgroup(c).thaw()
        self._event("unpause", c)
        return c

    # ---- removal and clean-up ---------------------------------------------------

    def rename(self, ref: str, new_name: str) -> Container:
        """Give a container another unique name (running or not)."""
        from pyctr.bundle import validate_name

        validate_name(new_name)
        c = self.containers.get(ref)
        old = c.name
        c = self.containers.rename(c, new_name)
        self._event("rename", c, oldName=old)
        net = (c.record.get("NetworkSettings") or {}).get("NetworkName")
        if net and self.status(c) in ("running", "paused"):
            from pyctr import network
            network.refresh_peers(self, net)  # the new name resolves in its peers' /etc/hosts
        return c

    def top_pids(self, ref: str) -> list[int]:
        """The host pids of every process of a running container (its cgroup's members)."""
        c = self._running(ref, "top")
        mgr = self.cgroup(c)
        return sorted(mgr.pids()) if mgr is not None else [c.record["State"]["Pid"]]

    def remove_container(self, ref: str, *, force: bool = False, volumes: bool = False) -> str:
        c = self.containers.get(ref)
        if self.status(c) in ("running", "paused"):
            if not force:
                raise Conflict(f'cannot remove container "/{c.name}": container is running',
                               hint="stop the container before removing or force remove (-f)")
            mgr = self.cgroup(c)
            if mgr is not None and mgr.exists:
                mgr.kill_all()  # also thaws a paused container's processes out of the freezer
            _kill_and_wait(c.record["State"]["Pid"], c.record["State"].get("PidStartTime"))
        _wait_monitor(c)  # its `pyctr run` cleans up after the exit: let it finish first
        self._release(c)
        self._destroy(c)
        if volumes:  # -v: the anonymous volumes go with it (named ones stay, as in docker)
            from pyctr.fsutil import remove_tree
            for name in c.record.get("HostConfig", {}).get("AnonymousVolumes") or []:
                remove_tree(self.root / "volumes" / name)
        return c.name

    def prune_containers(self) -> list[str]:
        """`pyctr container prune`: every stopped (exited or created) container."""
        self.reconcile()
        removed = []
        for c in self.containers.list():
            if self.status(c) in ("exited", "created") and not c.monitor_alive:
                self._release(c)
                self._destroy(c)
                removed.append(c.id)
        return removed

    def _release(self, c: Container) -> None:
        """What a stopped container may still hold: network, rootfs mount, cgroup, state."""
        from pyctr import network
        from pyctr.limits import release_parent

        network.teardown(self, c)
        self._unmount_rootfs(c)
        mgr = self.cgroup(c)
        if mgr is not None and mgr.exists:
            mgr.destroy()
        release_parent(self.root, c.record.get("HostConfig", {}).get("CgroupParent"))
        state_dir = self.runtime_root / c.id
        if state_dir.exists():
            from pyctr.fsutil import remove_tree
            remove_tree(state_dir)

    def reconcile(self) -> list[str]:
        """Give their real end to containers whose monitor died (crash recovery).

        The monitor (the shim of a detached container, the `pyctr run` of a
        foreground one) records the exit and releases what the container
        held.  When it is gone first (kill -9, a crash), nobody would:
        a container still running without it is killed (nobody could reap
        it or read its output: it must not run forever unwatched), then its
        network, rootfs mount and cgroup (the OOM verdict read first) are
        released, the state marked exited, a --rm container removed.  A
        container made by `pyctr create` has no monitor until it starts.
        """
        cleaned = []
        for c in self.containers.list():
            recorded = c.record["State"]["Status"]
            if recorded not in ("running", "created") or not c.monitored or c.monitor_alive:
                continue
            code = c.record["State"].get("ExitCode") or 255
            if recorded == "running" and c.status == "running":
                mgr = self.cgroup(c)
                if mgr is not None and mgr.exists:
                    mgr.kill_all()
                _kill_and_wait(c.record["State"]["Pid"], c.record["State"].get("PidStartTime"))
                code = 128 + signal.SIGKILL
            oom = self._oom_killed(c)
            self._release(c)
            self._finish(c, exit_code=code, oom_killed=oom,
                         error="the container's monitor (its shim, or pyctr run) ended before "
                               "it: the exit status is lost")
            if c.record["HostConfig"].get("AutoRemove"):
                self._destroy(c)
            cleaned.append(c.id)
        return cleaned

    def prune(self) -> tuple[list[str], list[str], list[str]]:
        """`pyctr system prune`: stopped containers, cgroups no container owns, dangling
        images (no name, no container) and store blobs and layers nothing references."""
        self.reconcile()
        removed = []
        for c in self.containers.list():
            if self.status(c) in ("exited", "created"):
                self._release(c)
                self._destroy(c)
                removed.append(c.id)
        cgroups = self._prune_cgroups()
        import shutil
        for leftover in self.containers.dir.glob(".removed-*"):  # a remove that raced a save
            shutil.rmtree(leftover, ignore_errors=True)
        images = []
        for image in self.images.list():
            if not image.names and not self.containers.using_image(image.id):
                images += self.images.remove(image.id)
        return removed, cgroups, images + self.images.gc()

    def _prune_cgroups(self) -> list[str]:
        """Leaf cgroups under /pyctr named like a container id with no container record."""
        from pyctr.cgroups import detect
        from pyctr.limits import known_parents, open_container_cgroup, release_parent

        known = {c.id for c in self.containers.list()}
        layout = detect()
        roots = [layout.unified] if layout.driver == "v2" else list(layout.v1.values())
        parents = ["pyctr", *sorted(known_parents(self.root))]
        stale = set()
        for root in roots:
            for parent in parents:
                d = Path(root) / parent
                if d.is_dir():
                    stale |= {f"/{parent}/{e.name}" for e in os.scandir(d)
                              if e.is_dir() and len(e.name) == 64 and e.name not in known}
        for path in sorted(stale):
            open_container_cgroup(path).destroy()
        for parent in parents:
            release_parent(self.root, parent)
        return sorted(stale)

    # ---- networks ---------------------------------------------------------------

    def create_network(self, name: str, *, subnet: str | None = None,
                       gateway: str | None = None):
        from pyctr.netns import ensure_bridge

        net = self.networks.create(name, subnet=subnet, gateway=gateway)
        ensure_bridge(net)
        return net

    def remove_network(self, name: str):
        """Refused while a container is on it; then bridge, NAT rule and record go."""
        from pyctr.netns import delete_bridge, remove_masquerade
        from pyctr.network import network_in_use

        self.reconcile()  # a crashed run's address must not hold the network
        net = self.networks.get(name)
        users = network_in_use(self, net.name)
        if users and not net.predefined:
            raise Conflict(f"error while removing network: network {net.name} id "
                           f"{net.id[:12]} has active endpoints",
                           hint="remove the containers first: " +
                                ", ".join(u.name for u in users))
        self.networks.remove(net.name)  # refuses predefined networks and held addresses
        delete_bridge(net)
        remove_masquerade(net)
        return net

    def remove_image(self, ref: str, *, force: bool = False) -> list[str]:
        """docker's rule: untagging one of several names is always allowed."""
        image = self.images.resolve(ref)
        if len(image.names) > 1 and not image.id.startswith(ref) and \
                not image.id.split(":")[-1].startswith(ref):
            return self.images.remove(ref)
        users = self.containers.using_image(image.id)
        if users and not force:
            raise Conflict(f"unable to remove image {ref}: image is being used by "
                           f"container {users[0].id[:12]} ({users[0].name})",
                           hint="remove the container first (pyctr rm), or use rmi -f")
        if users and force:
            running = [u for u in users if self.status(u) in ("running", "paused")]
            if running:
                raise Conflict(f"unable to remove image {ref}: image is being used by "
                               f"running container {running[0].id[:12]} ({running[0].name})",
                               hint="stop and remove the container first")
        return self.images.remove(ref)


def _wait_monitor(c: Container, timeout: float = 10.0) -> None:
    """Wait (bounded) for the container's `pyctr run` to end: two clean-ups at once race."""
    import time

    deadline = time.monotonic() + timeout
    while c.monitor_alive and os.getpid() != c.record["State"].get("MonitorPid") \
            and time.monotonic() < deadline:
        time.sleep(0.01)


def _kill_and_wait(pid: int, start_time: int | None, timeout: float = 10.0) -> None:
    import time
    if not pid or pid_start_time(pid) != start_time:
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while pid_start_time(pid) == start_time and time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.01)


__all__ = ["Engine", "RunResult", "require_overlayfs", "require_root"]
