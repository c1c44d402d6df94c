"""The runtime's verbs, runc's lifecycle: create, start, state, kill, pause, resume, delete.

``create`` leaves PID 1 fully set up and blocked on ``<state>/<id>/exec.fifo``;
``start`` — from this process or any other — opens the fifo for reading,
which lets the init execve.  Everything a failed create made (the process,
its namespaces, its cgroup, the state dir) is removed before the error is
raised.  ``delete`` removes the cgroup too: whoever wants its OOM verdict
(the engine) reads it before.
"""

from __future__ import annotations

import os
import select
import signal
import time
from pathlib import Path

from pyctr.errors import Conflict, ContainerInitError, NotFound, PyctrError
from pyctr.fsutil import remove_tree

from . import cgroup
from .process import Spawned, await_exec, kill_and_reap, spawn
from .spec import OCI_VERSION, load_spec, rootfs_path
from .statedir import FIFO, container_dir, read_state, start_time, state, status_of, write_state

SECCOMP_CACHE = ".seccomp"  # compiled filters; not a container id (those start alphanumeric)

__all__ = ["Container", "create", "delete", "kill", "load", "pause", "resume", "start", "state"]


class Container:
    """A container created by this runtime; ``pid`` is PID 1's pid on the host."""

    def __init__(self, container_id: str, pid: int, bundle: Path, state_root: Path,
                 console_fd: int | None = None, sync: object | None = None,
                 pid_start_time: int | None = None, cgroups_path: str | None = None) -> None:
        self.id = container_id
        self.pid = pid
        self.pid_start_time = pid_start_time  # which process ``pid`` is (pid reuse)
        self.bundle = bundle
        self.state_root = Path(state_root)
        self.console_fd = console_fd
        self._sync = sync
        self._exit_code: int | None = None
        self.cgroups_path = cgroups_path  # linux.cgroupsPath, made by create

    def __repr__(self) -> str:
        return f"<Container {self.id} pid={self.pid}>"

    @property
    def status(self) -> str:
        return state(self.id, self.state_root)["status"]

    def start(self) -> None:
        """Let the init execve; raise ExecError if execve itself failed."""
        start(self.id, self.state_root)
        sync, self._sync = self._sync, None
        if sync is None:
            return
        await_exec(sync)  # type: ignore[arg-type]

    def wait(self) -> int:
        """Reap PID 1: its exit code, or 128+signal like docker.

        Blocks in waitpid; PID 1 of a container created by another process
        is not our child, so then block on its pidfd until it exits (its
        status is lost to us) and raise Conflict.
        """
        if self._exit_code is not None:
            return self._exit_code
        try:
            _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:
            self._wait_foreign()
            raise Conflict(f"container {self.id} was not created by this process; "
                           "its exit status is lost", hint="wait from the creating process")
        self._exit_code = _exit_code(status)
        return self._exit_code

    def _wait_foreign(self) -> None:
        try:
            pidfd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            return
        try:
            if self._started() == start_time(self.pid):
                select.select([pidfd], [], [])
        finally:
            os.close(pidfd)

    def _started(self) -> int | None:
        """PID 1's recorded start time (from state.json for a handle made by load())."""
        if self.pid_start_time is None:
            try:
                data = read_state(self.state_root, self.id)
            except NotFound:
                return None
            if data.get("pid") == self.pid:
                self.pid_start_time = data.get("pidStartTime")
        return self.pid_start_time

    def kill(self, sig: int = signal.SIGTERM) -> None:
        """Signal PID 1 (checked against pid reuse)."""
        kill(self.id, self.state_root, sig)

    def pause(self) -> None:
        """Freeze every process of the container (runc pause): state then says "paused"."""
        pause(self.id, self.state_root)

    def resume(self) -> None:
        """Thaw a paused container (runc resume)."""
        resume(self.id, self.state_root)

    def delete(self) -> None:
        """Kill PID 1 if it is still the process we started, reap it, close our fds, remove state.

        A pid whose start time differs from the recorded one belongs to
        someone else now (pid reuse): it is left alone.  Then the cgroup:
        whatever is left in it is killed (bounded wait) and it is removed;
        the state dir goes last, so a delete that failed there can be retried.
        """
        mgr = cgroup.open_path(self.cgroups_path) if self.cgroups_path else None
        if self._exit_code is None:
            started = self._started()
            if started is not None:
                if mgr is not None and mgr.exists and mgr.frozen:
                    _kill_frozen(self.pid, started, mgr)
                status = kill_and_reap(self.pid, started)
                if status is not None:
                    self._exit_code = _exit_code(status)
        if self.console_fd is not None:
            os.close(self.console_fd)
            self.console_fd = None
        if self._sync is not None:
            self._sync.close()  # type: ignore[attr-defined]
            self._sync = None
        if mgr is not None:
            cgroup.destroy(mgr)
        remove_tree(container_dir(self.state_root, self.id))


def _kill_frozen(pid: int, started: int, mgr) -> None:
    """SIGKILL a frozen PID 1, then thaw: a v1-frozen task acts on no signal until thawed."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        if start_time(pid, zombies=True) == started:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except ProcessLookupError:
        pass
    finally:
        os.close(pidfd)
    mgr.thaw()


def create(container_id: str, bundle: Path, *, state_root: Path, stdin: int = 0,
           stdout: int = 1, stderr: int = 2, durable: bool = True) -> Container:
    """Set up a container from ``bundle`` and leave PID 1 waiting for start().

    ``durable=False`` skips the fsyncs of state.json, for a caller that
    deletes the container when it exits (pyctr run --rm).
    """
    bundle = Path(bundle).absolute()
    directory = container_dir(Path(state_root), container_id)
    spec = load_spec(bundle)
    cgroups_path = cgroup.cgroups_path(spec)  # a relative one is refused before anything
    Path(state_root).mkdir(parents=True, exist_ok=True, mode=0o711)
    try:
        directory.mkdir(mode=0o711)
    except FileExistsError:
        raise Conflict(f"container {container_id} already exists", path=str(directory),
                       hint="pick another id or delete the old container") from None
    spawned: Spawned | None = None
    try:
        fifo = directory / FIFO
        os.mkfifo(fifo, 0o622)
        os.chmod(fifo, 0o622)  # any uid may open it for writing: the init may not be root
        spawned = spawn(spec, str(rootfs_path(bundle, spec)), str(bundle), str(fifo),
                        stdin=stdin, stdout=stdout, stderr=stderr,
                        seccomp_cache=str(Path(state_root) / SECCOMP_CACHE))
        started = start_time(spawned.pid)
        write_state(directory, {
            "ociVersion": OCI_VERSION, "id": container_id, "pid": spawned.pid,
            "pidStartTime": started, "bundle": str(bundle),
            "created": time.time(), "cgroupsPath": cgroups_path,
        }, sync=durable)
    except BaseException:
        if spawned is not None:
            spawned.sync.close()
            if spawned.console_fd is not None:
                os.close(spawned.console_fd)
            kill_and_reap(spawned.pid)
            if spawned.cgroup is not None:
                try:
                    cgroup.destroy(spawned.cgroup)
                except PyctrError:
                    pass  # the first error is the one to see
        remove_tree(directory)
        raise
    return Container(container_id, spawned.pid, bundle, Path(state_root),
                     console_fd=spawned.console_fd, sync=spawned.sync,
                     pid_start_time=started, cgroups_path=cgroups_path)


def start(container_id: str, state_root: Path) -> None:
    """Open the exec fifo for reading: the waiting init's open() returns and it execs.

    Two callers may race: the one that reads the init's byte starts it;
    the other sees the fifo gone, hung up, or no longer held by the init,
    and gets Conflict instead of waiting forever.
    """
    st = state(container_id, state_root)
    if st["status"] != "created":
        raise Conflict(f"cannot start container {container_id}: it is {st['status']}",
                       hint="only a created container can be started")
    fifo = container_dir(Path(state_root), container_id) / FIFO
    data = read_state(state_root, container_id)
    raced = Conflict(f"cannot start container {container_id}: another start got there first",
                     hint="start a container once")
    try:
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise raced from None
    try:
        ident = os.fstat(fd)
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while True:
            if poller.poll(100):
                if os.read(fd, 1):
                    break
                raise raced  # the init wrote to, and closed, someone else's end
            if start_time(data["pid"]) != data["pidStartTime"]:
                raise ContainerInitError(f"container {container_id}: init exited before start",
                                         step="start", hint="see the container's output")
            if not _holds(data["pid"], ident):
                raise raced
    finally:
        os.close(fd)
    os.unlink(fifo)


def _holds(pid: int, ident: os.stat_result) -> bool:
    """Whether ``pid`` still has the exec fifo open (it does until it has written its byte)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            st = os.stat(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (ident.st_dev, ident.st_ino):
            return True
    return False


def _exit_code(status: int) -> int:
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def load(container_id: str, state_root: Path) -> Container:
    """A handle on a container created elsewhere (wait() then cannot get its status)."""
    data = read_state(state_root, container_id)
    return Container(container_id, data["pid"], Path(data["bundle"]), Path(state_root),
                     pid_start_time=data.get("pidStartTime"),
                     cgroups_path=data.get("cgroupsPath"))


def kill(container_id: str, state_root: Path, sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` to PID 1, unless the pid now belongs to someone else."""
    data = read_state(state_root, container_id)
    if status_of(data, container_dir(Path(state_root), container_id)) == "stopped":
        raise NotFound(f"container {container_id} is not running", hint="it already exited")
    os.kill(data["pid"], sig)


def _cgroup_of(container_id: str, state_root: Path, verb: str):
    data = read_state(state_root, container_id)
    if not data.get("cgroupsPath"):
        raise Conflict(f"cannot {verb} container {container_id}: it has no cgroup",
                       hint="the freezer needs linux.cgroupsPath in config.json")
    return cgroup.open_path(data["cgroupsPath"])


def pause(container_id: str, state_root: Path) -> None:
    """Freeze the container's cgroup (v1 freezer.state, v2 cgroup.freeze)."""
    status = state(container_id, state_root)["status"]
    if status not in ("created", "running"):
        raise Conflict(f"cannot pause container {container_id}: it is {status}",
                       hint="only a created or running container can be paused")
    mgr = _cgroup_of(container_id, state_root, "pause")
    mgr.freeze()


def resume(container_id: str, state_root: Path) -> None:
    """Thaw a paused container's cgroup."""
    status = state(container_id, state_root)["status"]
    if status != "paused":
        raise Conflict(f"cannot resume container {container_id}: it is {status}",
                       hint="only a paused container can be resumed")
    mgr = _cgroup_of(container_id, state_root, "resume")
    mgr.thaw()


def delete(container_id: str, state_root: Path) -> None:
    """Remove a container; kill its PID 1 first if it still runs."""
    load(container_id, state_root).delete()
