"""The engine: images + runtime = containers (what dockerd/containerd do).

``Engine.run`` is the whole path of ``pyctr run`` in the foreground:
resolve the image, reserve a name, mount the overlay rootfs, write the
bundle's config.json, let the runtime create and start the container,
relay stdio and signals, record the exit and clean up.  The runtime knows
nothing of images; the image store knows nothing of processes.
"""

from __future__ import annotations

import errno
import os
import signal
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from pyctr import bundle as B
from pyctr.containers import Container, ContainerStore, now_iso
from pyctr.errors import Conflict, ExecError, NotFound, PyctrError, UserError
from pyctr.fsutil import pid_start_time

DEFAULT_ROOT = "/var/lib/pyctr"
DEFAULT_RUN_DIR = "/run/pyctr"
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                     signal.SIGUSR1, signal.SIGUSR2)


def require_root(command: str = "pyctr") -> None:
    if os.geteuid() != 0:
        raise PyctrError("pyctr needs root", hint=f"try sudo {command}")


def require_overlayfs(filesystems: str = "/proc/filesystems") -> None:
    try:
        with open(filesystems) as f:
            if any(line.split()[-1:] == ["overlay"] for line in f):
                return
    except OSError:
        pass
    raise PyctrError("overlayfs is not available on this kernel",
                     path=filesystems, hint="try: modprobe overlay")


@dataclass
class RunResult:
    """How a foreground container ended."""

    exit_code: int
    container_id: str
    name: str
    oom_killed: bool = False
    hint: str = ""


class Engine:
    """The engine's state lives under ``root`` (images, layers, containers)."""

    def __init__(self, root: str | Path | None = None,
                 run_dir: str | Path | None = None) -> None:
        self.root = Path(root or os.environ.get("PYCTR_ROOT") or DEFAULT_ROOT)
        self.run_dir = Path(run_dir or os.environ.get("PYCTR_RUN_DIR") or DEFAULT_RUN_DIR)

    @cached_property
    def images(self):
        from pyctr.images.store import ImageStore
        return ImageStore(self.root)

    @cached_property
    def containers(self) -> ContainerStore:
        return ContainerStore(self.root)

    @property
    def runtime_root(self) -> Path:
        return self.run_dir / "runtime"

    # ---- run ------------------------------------------------------------

    def run(self, opts: B.RunOptions) -> RunResult:
        """Run a container in the foreground; its exit status is docker's."""
        from pyctr.limits import cgroup_path, resources_from_flags

        require_overlayfs()
        if opts.name is not None:
            B.validate_name(opts.name)
        if opts.hostname is not None:
            B.validate_hostname(opts.hostname)
        user_mounts = [B.parse_volume(v, volumes_dir=self.root / "volumes")
                       for v in opts.volumes] + [B.parse_tmpfs(t) for t in opts.tmpfs]
        for path in opts.env_files:
            B.read_env_file(path)  # fail on a bad file before anything is made
        B.parse_env(opts.env)
        resources, _ = resources_from_flags(opts.limits)  # docker's texts, before anything exists
        cgroup_path(opts.cgroup_parent, "check")
        image = self.images.resolve(opts.image)
        cfg = image.config or {}
        args = B.process_args(cfg, opts)
        cwd = B.effective_workdir(cfg, opts)

        c = self.containers.create(
            name=opts.name, image=opts.image, image_id=image.id,
            record={"Path": args[0], "Args": args[1:],
                    "Config": {"Image": opts.image, "Cmd": opts.command or cfg.get("Cmd"),
                               "Entrypoint": cfg.get("Entrypoint"), "Tty": opts.tty,
                               "OpenStdin": opts.interactive, "WorkingDir": cwd,
                               "User": B.effective_user(cfg, opts),
                               "Labels": cfg.get("Labels") or {},
                               "StopSignal": cfg.get("StopSignal") or "SIGTERM"},
                    "HostConfig": {"AutoRemove": opts.rm, "ReadonlyRootfs": opts.read_only,
                                   "Binds": list(opts.volumes),
                                   "Tmpfs": list(opts.tmpfs),
                                   "CgroupParent": opts.cgroup_parent or "",
                                   **_docker_limits(resources)}})
        c.record["HostConfig"]["CgroupPath"] = cgroup_path(opts.cgroup_parent, c.id)
        c.record["HostConfig"]["Resources"] = resources.to_oci()
        try:
            self._mount_rootfs(c, image, volatile=opts.rm)
            spec = self._write_bundle(c, opts, cfg, args, cwd, user_mounts)
            return self._run_created(c, opts, spec)
        except BaseException as exc:
            if isinstance(exc, PyctrError):
                self._finish(c, exit_code=exc.exit_code, error=exc.render())
            else:
                self._finish(c, exit_code=125, error=str(exc))
            raise
        finally:
            self._unmount_rootfs(c)
            if opts.rm:
                self.containers.remove_dir(c)

    def _mount_rootfs(self, c: Container, image, *, volatile: bool = False) -> None:
        """One overlayfs per container: the image's layers below, its own upper dir.

        ``volatile`` (for --rm containers, as podman does) skips overlayfs's
        sync of the upper fs at unmount, ~100 ms here, for data that is
        deleted right after anyway.
        """
        from pyctr.images.snapshot import overlay_options
        from pyctr.runtime import syscalls

        upper, work = c.dir / "upper", c.dir / "work"
        for d in (upper, work, c.rootfs):
            d.mkdir(exist_ok=True)
        cwd, data = overlay_options(self.images, image, upper, work)
        # lowerdir is given as short relative links (l/XXXX) so images with
        # many layers stay under the one-page limit of mount options: the
        # kernel resolves them against the caller's working directory.
        old = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.chdir(cwd)
            try:
                syscalls.mount("overlay", str(c.rootfs), "overlay", 0,
                               data + (",volatile" if volatile else ""))
            except OSError as exc:
                if not volatile or exc.errno != errno.EINVAL:
                    raise
                syscalls.mount("overlay", str(c.rootfs), "overlay", 0, data)  # kernel < 5.10
        except OSError as exc:
            raise PyctrError(f"cannot mount the overlay rootfs: {exc.strerror}",
                             step="rootfs", syscall="mount", path=str(c.rootfs),
                             errno=exc.errno,
                             hint="the root dir must not itself be on overlayfs") from None
        finally:
            os.fchdir(old)
            os.close(old)
        c.record["GraphDriver"] = {"Name": "overlay", "Data": {
            "UpperDir": str(upper), "WorkDir": str(work), "MergedDir": str(c.rootfs)}}

    def _unmount_rootfs(self, c: Container) -> None:
        if not _is_mountpoint(c.rootfs):
            return
        from pyctr.runtime import syscalls
        try:
            syscalls.umount2(str(c.rootfs), 0)
        except OSError:
            syscalls.umount2(str(c.rootfs), syscalls.MNT_DETACH)

    def _write_bundle(self, c: Container, opts: B.RunOptions, cfg: dict, args: list[str],
                      cwd: str, user_mounts: list[B.Mount]) -> dict:
        from pyctr.fsutil import atomic_write, atomic_write_json
        from pyctr.runtime.spec import default_spec
        from pyctr.runtime.users import resolve_user

        hostname = opts.hostname or c.id[:12]
        user = resolve_user(c.rootfs, B.effective_user(cfg, opts))
        etc = {}
        for dest, name, text in (
                ("/etc/hostname", "hostname", hostname + "\n"),
                ("/etc/hosts", "hosts", B.hosts_file(hostname)),
                ("/etc/resolv.conf", "resolv.conf", B.resolv_conf(_host_resolv()))):
            atomic_write(c.dir / name, text, mode=0o644, sync=False)  # made anew each start
            etc[dest] = c.dir / name
        for m in user_mounts:
            if m.type == "bind" and m.source.startswith(str(self.root / "volumes")):
                Path(m.source).mkdir(parents=True, exist_ok=True)
            elif m.type == "bind" and not os.path.exists(m.source):
                Path(m.source).mkdir(parents=True)  # docker -v creates a missing host dir
        spec = default_spec(args, terminal=opts.tty)
        B.apply_run_options(
            spec, args=args, cwd=cwd,
            env=B.container_env(cfg, opts, hostname=hostname, home=user.home),
            uid=user.uid, gid=user.gid, additional_gids=user.additional_gids,
            hostname=hostname, terminal=opts.tty, read_only=opts.read_only,
            mounts=B.oci_mounts(user_mounts, etc), console_size=_console_size(),
            cgroups_path=c.record["HostConfig"]["CgroupPath"],
            resources=c.record["HostConfig"]["Resources"])
        atomic_write_json(c.dir / "config.json", spec, sync=c.durable)
        c.record["Config"]["Env"] = spec["process"]["env"]
        c.record["Config"]["Hostname"] = hostname
        c.record["Mounts"] = [{"Type": m.type, "Source": m.source,
                               "Destination": m.destination, "RW": not m.readonly}
                              for m in user_mounts]
        c.save()
        return spec

    def _run_created(self, c: Container, opts: B.RunOptions, spec: dict) -> RunResult:
        from pyctr.runtime import container as rt

        stdin_fd = 0 if opts.interactive else os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        try:
            ctr = rt.create(c.id, c.bundle, state_root=self.runtime_root,
                            stdin=stdin_fd, stdout=1, stderr=2)
        finally:
            if stdin_fd != 0:
                os.close(stdin_fd)
        try:
            state = c.record["State"]
            state.update(Status="running", Running=True, Pid=ctr.pid,
                         PidStartTime=pid_start_time(ctr.pid), StartedAt=now_iso())
            c.save()
            with _forward_signals(ctr.pid):
                try:
                    ctr.start()
                except ExecError as exc:
                    ctr.wait()
                    self._finish(c, exit_code=exc.exit_code, error=exc.render())
                    raise
                if ctr.console_fd is not None:
                    from pyctr.tty import relay
                    relay(ctr.console_fd, interactive=opts.interactive)
                code = ctr.wait()
            oom = self._oom_killed(c)  # before delete: the runtime removes the cgroup
            self._finish(c, exit_code=code, oom_killed=oom)
            from pyctr.limits import oom_hint
            return RunResult(code, c.id, c.name, oom,
                             oom_hint(c.record["HostConfig"].get("Resources")) if oom else "")
        finally:
            ctr.delete()

    def _oom_killed(self, c: Container) -> bool:
        path = c.record.get("HostConfig", {}).get("CgroupPath")
        if not path:
            return False
        from pyctr.limits import open_container_cgroup
        try:
            mgr = open_container_cgroup(path)
            return mgr.exists and mgr.oom_killed()
        except (PyctrError, OSError):
            return False

    def _finish(self, c: Container, *, exit_code: int, error: str = "",
                oom_killed: bool = False) -> None:
        state = c.record["State"]
        if state.get("FinishedAt"):
            return
        state.update(Status="exited", Running=False, Pid=0, ExitCode=exit_code,
                     Error=error, OOMKilled=oom_killed, FinishedAt=now_iso())
        if c.dir.exists():
            c.save()

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
        rec = dict(c.record)
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
        c.record["HostConfig"].update(Resources=res.to_oci(), **_docker_limits(res))
        c.save()
        return c

    def pause(self, ref: str) -> Container:
        c = self._running(ref, "pause")
        if self.status(c) == "paused":
            raise Conflict(f"container {c.name} is already paused")
        self.cgroup(c).freeze()
        return c

    def unpause(self, ref: str) -> Container:
        c = self._running(ref, "unpause")
        if self.status(c) != "paused":
            raise Conflict(f"container {c.name} is not paused")
        self.cgroup(c).thaw()
        return c

    # ---- removal and clean-up ---------------------------------------------------

    def remove_container(self, ref: str, *, force: bool = False) -> str:
        c = self.containers.get(ref)
        if self.status(c) in ("running", "paused"):
            if not force:
                raise Conflict(f'cannot remove container "/{c.name}": container is running',
                               hint="stop the container before removing or force remove (-f)")
            mgr = self.cgroup(c)
            if mgr is not None and mgr.exists:
                mgr.kill_all()  # also thaws a paused container's processes out of the freezer
            _kill_and_wait(c.record["State"]["Pid"], c.record["State"].get("PidStartTime"))
        self._release(c)
        self.containers.remove_dir(c)
        return c.name

    def _release(self, c: Container) -> None:
        """What a stopped container may still hold: its rootfs mount, cgroup, runtime state."""
        self._unmount_rootfs(c)
        mgr = self.cgroup(c)
        if mgr is not None and mgr.exists:
            mgr.destroy()
        state_dir = self.runtime_root / c.id
        if state_dir.exists():
            import shutil
            shutil.rmtree(state_dir, ignore_errors=True)

    def reconcile(self) -> list[str]:
        """Clean what containers that died with their CLI left behind (crash recovery).

        A record that says running whose PID is gone gets its real end: the
        rootfs unmounted, the cgroup (with the OOM verdict read first)
        removed, the state marked exited.
        """
        cleaned = []
        for c in self.containers.list():
            if c.record["State"]["Status"] == "running" and c.status == "exited":
                oom = self._oom_killed(c)
                self._release(c)
                self._finish(c, exit_code=c.record["State"].get("ExitCode") or 255,
                             error="the container's monitor (pyctr run) ended before it",
                             oom_killed=oom)
                if c.record["HostConfig"].get("AutoRemove"):
                    self.containers.remove_dir(c)
                cleaned.append(c.id)
        return cleaned

    def prune(self) -> tuple[list[str], list[str]]:
        """`pyctr system prune`: stopped containers, and cgroups no container owns."""
        self.reconcile()
        removed = []
        for c in self.containers.list():
            if self.status(c) in ("exited", "created"):
                self._release(c)
                self.containers.remove_dir(c)
                removed.append(c.id)
        return removed, self._prune_cgroups()

    def _prune_cgroups(self) -> list[str]:
        """Leaf cgroups under /pyctr named like a container id with no container record."""
        from pyctr.cgroups import detect
        from pyctr.limits import open_container_cgroup

        known = {c.id for c in self.containers.list()}
        layout = detect()
        roots = [layout.unified] if layout.driver == "v2" else list(layout.v1.values())
        stale = set()
        for root in roots:
            parent = Path(root) / "pyctr"
            if parent.is_dir():
                stale |= {e.name for e in os.scandir(parent)
                          if e.is_dir() and len(e.name) == 64 and e.name not in known}
        for cid in sorted(stale):
            open_container_cgroup(f"/pyctr/{cid}").destroy()
        return sorted(stale)

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


def _docker_limits(res) -> dict:
    """The limits under the names `docker inspect` gives them in HostConfig."""
    cfs = res.cfs()
    return {"Memory": res.memory or 0, "MemorySwap": res.memory_swap or 0,
            "MemoryReservation": res.memory_reservation or 0,
            "NanoCpus": int(res.cpus * 1e9) if res.cpus else 0,
            "CpuQuota": cfs[0] if cfs else 0, "CpuPeriod": cfs[1] if cfs else 0,
            "CpuShares": res.cpu_shares or 0, "CpusetCpus": res.cpuset_cpus or "",
            "CpusetMems": res.cpuset_mems or "", "PidsLimit": res.pids_limit,
            "BlkioWeight": res.blkio_weight or 0}


def _is_mountpoint(path: Path) -> bool:
    target = os.fsencode(str(path))
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            return any(line.split()[4] == target for line in f)
    except OSError:
        return False


def _host_resolv() -> str:
    try:
        with open("/etc/resolv.conf") as f:
            return f.read()
    except OSError:
        return ""


def _console_size() -> tuple[int, int] | None:
    import fcntl
    import struct
    import termios
    for fd in (0, 1, 2):
        try:
            rows, cols, _, _ = struct.unpack(
                "HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
            if rows and cols:
                return rows, cols
        except OSError:
            continue
    return None


class _forward_signals:
    """Signals the CLI gets go to the container's PID 1 (docker's sig-proxy)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.saved: dict = {}

    def _handler(self, signum, _frame) -> None:
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            pass

    def __enter__(self):
        for sig in FORWARDED_SIGNALS:
            self.saved[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self.saved.items():
            signal.signal(sig, old)


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


__all__ = ["Engine", "NotFound", "UserError", "require_root"]
