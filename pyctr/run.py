"""How `pyctr run` makes a container in the foreground (the engine's run path).

Resolve the image, reserve a name, mount the overlay rootfs, write the
bundle's config.json and /etc files, let the runtime create and start the
container, relay stdio and signals, record the exit (OOM included) and
clean up.  ``RunMixin`` is part of ``pyctr.engine.Engine``; it is kept apart
because it is the one path whose every millisecond counts.
"""

from __future__ import annotations

import errno
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from pyctr import bundle as B
from pyctr import explain
from pyctr.containers import Container, now_iso
from pyctr.errors import ExecError, PyctrError
from pyctr.fsutil import pid_start_time

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                     signal.SIGUSR1, signal.SIGUSR2)


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


class RunMixin:
    """The run path of Engine (which provides images, containers, root, runtime_root)."""

    def run(self, opts: B.RunOptions) -> RunResult:
        """Run a container in the foreground; its exit status is docker's."""
        c, image = self._create(opts)
        return self._run_foreground(c, opts, image)

    def create(self, opts: B.RunOptions, *, monitor: bool = True) -> Container:
        """Validate every flag, then reserve the name and write the record (docker create).

        Nothing is mounted and no process exists yet; the record keeps the
        options (environment resolved) so that every start makes the same
        container.  ``monitor=False``: no process watches it until a start
        (`pyctr create`), so a crash-recovery pass must not take it for an
        abandoned one.
        """
        return self._create(opts, monitor=monitor)[0]

    def _create(self, opts: B.RunOptions, *, monitor: bool = True):
        """create, and the image it resolved (the foreground path mounts it next)."""
        from pyctr import network
        from pyctr.limits import cgroup_path, claim_parent, resources_from_flags

        require_overlayfs()
        if opts.name is not None:
            B.validate_name(opts.name)
        if opts.hostname is not None:
            B.validate_hostname(opts.hostname)
        opts.volumes, anonymous = B.name_anonymous_volumes(opts.volumes)
        for v in opts.volumes:
            B.parse_volume(v, volumes_dir=self.root / "volumes")
        for t in opts.tmpfs:
            B.parse_tmpfs(t)
        if opts.init:
            B.find_init()
        restart = B.parse_restart(opts.restart, rm=opts.rm)
        env = [e for path in opts.env_files for e in B.read_env_file(path)]
        env += B.parse_env(opts.env)  # fail on a bad entry before anything is made
        resources, _ = resources_from_flags(opts.limits)  # docker's texts, before anything exists
        cgroup_path(opts.cgroup_parent, "check")
        image = self.images.resolve(opts.image)
        explain.note("image", f"{opts.image} = {image.id[:19]}, {len(image.diff_ids)} "
                              f"layer{'s' if len(image.diff_ids) != 1 else ''}")
        cfg = image.config or {}
        args = B.process_args(cfg, opts)
        cwd = B.effective_workdir(cfg, opts)
        network.check(opts.net, self, cfg)
        claim_parent(self.root, opts.cgroup_parent)

        def complete(record: dict, cid: str) -> None:  # what needs the id, in the first write
            record["HostConfig"]["CgroupPath"] = cgroup_path(opts.cgroup_parent, cid)
            record["HostConfig"]["Resources"] = resources.to_oci()
            record["Config"]["Hostname"] = opts.hostname or (
                os.uname().nodename if opts.net.mode == "host" else cid[:12])

        try:
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
                                       "NetworkMode": opts.net.network, "Init": opts.init,
                                       "AnonymousVolumes": anonymous,
                                       "RestartPolicy": restart,
                                       **docker_limits(resources)},
                        "RunOptions": B.options_to_record(opts, env=env),
                        "RestartCount": 0},
                monitor=monitor, complete=complete)
        except BaseException:
            from pyctr.limits import release_parent
            release_parent(self.root, opts.cgroup_parent)
            raise
        self._event("create", c)
        return c, image

    def _prepare(self, c: Container, opts: B.RunOptions, image=None) -> dict:
        """What a start needs before the runtime: rootfs, network, config.json; the spec.

        On failure what was made is released again (the caller records the error).
        """
        from pyctr import network

        image = image or self.images.resolve(c.record["ImageID"])
        cfg = image.config or {}
        args = B.with_init([c.record["Path"], *c.record["Args"]], opts)
        cwd = c.record["Config"]["WorkingDir"]
        user_mounts = [B.parse_volume(v, volumes_dir=self.root / "volumes")
                       for v in opts.volumes] + [B.parse_tmpfs(t) for t in opts.tmpfs]
        maps = network.check(opts.net, self, cfg)
        hostname = c.record["Config"]["Hostname"]
        try:
            self._mount_rootfs(c, image, volatile=opts.rm)
            c.record["NetworkSettings"] = network.setup(self, c, opts.net, maps, hostname)
            spec = self._write_bundle(c, opts, cfg, args, cwd, user_mounts)
            if c.record["NetworkSettings"].get("NetworkName"):
                network.refresh_peers(self, c.record["NetworkSettings"]["NetworkName"],
                                      skip=c.id)
            return spec
        except BaseException:
            self._release_start(c)
            raise

    def _release_start(self, c: Container) -> None:
        """Undo a start: network, rootfs mount (the runtime removed the cgroup)."""
        from pyctr import network

        network.teardown(self, c)
        self._unmount_rootfs(c)

    def _run_foreground(self, c: Container, opts: B.RunOptions, image=None) -> RunResult:
        from pyctr.limits import release_parent

        try:
            spec = self._prepare(c, opts, image)
            return self._run_created(c, opts, spec)
        except BaseException as exc:
            if isinstance(exc, PyctrError):
                self._finish(c, exit_code=exc.exit_code, error=exc.render())
            else:
                self._finish(c, exit_code=125, error=str(exc))
            raise
        finally:
            self._release_start(c)
            release_parent(self.root, opts.cgroup_parent)  # the runtime removed the cgroup
            if opts.rm:
                self._destroy(c)
            elif c.dir.exists():
                c.save()

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
        explain.note("overlay", f"mount -t overlay overlay {c.rootfs} -o "
                                f"{data}{',volatile' if volatile else ''} (lowerdir from "
                                f"{cwd}, topmost first)")
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
        from pyctr import network
        from pyctr.fsutil import atomic_write, atomic_write_json
        from pyctr.runtime.spec import default_spec
        from pyctr.runtime.users import resolve_user

        hostname = c.record["Config"]["Hostname"]
        user = resolve_user(c.rootfs, B.effective_user(cfg, opts))
        net = c.record["NetworkSettings"]
        if opts.net.mode == "host":
            hosts = _read("/etc/hosts")
        else:
            hosts = network.hosts_text(self, c, hostname) or B.hosts_file(hostname)
        etc = {}
        for dest, name, text in (
                ("/etc/hostname", "hostname", hostname + "\n"),
                ("/etc/hosts", "hosts", hosts),
                ("/etc/resolv.conf", "resolv.conf", B.resolv_conf(_read("/etc/resolv.conf")))):
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
            mounts=B.oci_mounts(user_mounts, etc) + B.init_mounts(opts),
            console_size=_console_size(),
            cgroups_path=c.record["HostConfig"]["CgroupPath"],
            resources=c.record["HostConfig"]["Resources"],
            netns_path=net.get("SandboxKey") or None, host_network=opts.net.mode == "host")
        atomic_write_json(c.dir / "config.json", spec, sync=c.durable)
        explain.note("config.json", f"{c.dir / 'config.json'}: process {spec['process']['args']}"
                                    f", {len(spec['mounts'])} mounts, "
                                    f"{len(spec['linux']['namespaces'])} namespaces")
        c.record["Config"]["Env"] = spec["process"]["env"]
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
                            stdin=stdin_fd, stdout=1, stderr=2, durable=c.durable)
        finally:
            if stdin_fd != 0:
                os.close(stdin_fd)
        try:
            state = c.record["State"]
            state.update(Status="running", Running=True, Pid=ctr.pid,
                         PidStartTime=pid_start_time(ctr.pid), StartedAt=now_iso())
            c.save()
            self._event("start", c)
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
                oom_killed: bool = False, force: bool = False) -> None:
        """Record the exit.  The record is re-read first: other processes change it while
        the container runs (rename, update).  Once only, unless ``force``."""
        try:
            c.record = self.containers.reload(c).record
        except (OSError, ValueError):
            pass  # removed meanwhile (rm -f), or never written: keep ours
        state = c.record["State"]
        if state.get("FinishedAt") and not force:
            return
        state.update(Status="exited", Running=False, Pid=0, ExitCode=exit_code,
                     Error=error, OOMKilled=oom_killed, FinishedAt=now_iso())
        if c.dir.exists():
            c.save()
        if oom_killed:
            self._event("oom", c)
        self._event("die", c, exitCode=exit_code)


def docker_limits(res) -> dict:
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


def _read(path: str) -> str:
    try:
        with open(path) as f:
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
