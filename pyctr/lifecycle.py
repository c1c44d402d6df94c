"""The verbs of a container's life after `create`: start, stop, kill, wait, restart, logs.

A detached container is watched by its shim (pyctr/shim.py), which
records the exit; these verbs only act on the kernel (signals to PID 1,
checked against pid reuse through a pidfd and the recorded start time) and
then wait for what the shim records.  Status is always the kernel's word:
PID 1 alive with its recorded start time, the freezer for paused.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator

from pyctr import bundle as B
from pyctr.containers import Container
from pyctr.errors import Conflict, PyctrError, UserError
from pyctr.fsutil import pid_start_time

DEFAULT_STOP_TIMEOUT = 10  # seconds, docker's


def parse_signal(text: str | int) -> int:
    """docker's signal syntax: 9, KILL, SIGKILL, SIGRTMIN+3."""
    if isinstance(text, int):
        return text
    name = text.strip().upper()
    if name.isdigit():
        num = int(name)
        if 0 < num < signal.SIGRTMAX + 1:
            return num
    else:
        name = name if name.startswith("SIG") else "SIG" + name
        base, plus, offset = name.partition("+")
        if base in ("SIGRTMIN", "SIGRTMAX") and (not plus or offset.isdigit()):
            num = getattr(signal, base) + (int(offset) if plus else 0)
            if num <= signal.SIGRTMAX:
                return num
        elif not plus and isinstance(getattr(signal, name, None), signal.Signals):
            return int(getattr(signal, name))
    raise UserError(f'invalid signal: "{text}"', hint="a number or a name: 9, KILL, SIGTERM")


def signal_pid(pid: int, started: int | None, sig: int) -> bool:
    """Signal ``pid`` if it is still the process started at ``started``; whether it was."""
    if not pid:
        return False
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    try:
        if pid_start_time(pid) != started:
            return False  # gone; the pid now names another process
        signal.pidfd_send_signal(pidfd, sig)
        return True
    except ProcessLookupError:
        return False
    finally:
        os.close(pidfd)


def wait_gone(pid: int, started: int | None, timeout: float | None) -> bool:
    """Wait until PID ``pid`` (started at ``started``) has exited; False on timeout."""
    import select

    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        if pid_start_time(pid) != started:
            return True
        ready, _, _ = select.select([pidfd], [], [], timeout)
        return bool(ready) or pid_start_time(pid) != started
    finally:
        os.close(pidfd)


class LifecycleMixin:
    """Part of pyctr.engine.Engine (which provides containers, status, cgroup, _finish …)."""

    def run_detached(self, opts: B.RunOptions) -> Container:
        """`pyctr run -d`: create, then start under a shim; returns once PID 1 runs."""
        c, image = self._create(opts)
        return self._start(c, opts, image)

    def start(self, ref: str, *, restart: bool = False) -> Container:
        """Start a created or exited container under a shim (docker start).

        ``restart``: the daemon applying the restart policy (RestartCount
        counts those); a user's start clears the "stopped by hand" mark.
        """
        c = self.containers.get(ref)
        if self.status(c) in ("running", "paused") or c.monitor_alive:
            return c  # docker: starting a running container is no error
        me = os.getpid()
        if restart:
            c.record["RestartCount"] = c.record.get("RestartCount", 0) + 1
        c.record["State"].update(MonitorPid=me, MonitorStartTime=pid_start_time(me),
                                 ManuallyStopped=False)
        c.save()  # a crash from here on is cleaned up by the next reconcile
        return self._start(c, B.options_from_record(c.record["RunOptions"]))

    def _start(self, c: Container, opts: B.RunOptions, image=None) -> Container:
        from pyctr import shim
        from pyctr.limits import claim_parent, release_parent

        claim_parent(self.root, opts.cgroup_parent)
        try:
            spec = self._prepare(c, opts, image)
        except BaseException as exc:
            err = exc if isinstance(exc, PyctrError) else None
            self._finish(c, exit_code=err.exit_code if err else 125,
                         error=err.render() if err else str(exc))
            release_parent(self.root, opts.cgroup_parent)
            if opts.rm:
                self._destroy(c)
            raise
        shim.launch(self, c, opts, spec)  # from here the shim owns the record
        return self.containers.get(c.id) if c.dir.exists() else c

    def stop(self, ref: str, timeout: float | None = None) -> Container:
        """The image's StopSignal (SIGTERM by default), SIGKILL after ``timeout`` seconds."""
        c = self.containers.get(ref)
        if self.status(c) not in ("running", "paused"):
            return c  # docker: stopping a stopped container is no error
        timeout = DEFAULT_STOP_TIMEOUT if timeout is None else timeout
        self._mark_stopped(c)  # before the signal: no restart policy may undo this stop
        state = c.record["State"]
        pid, started = state["Pid"], state.get("PidStartTime")
        sig = parse_signal(c.record["Config"].get("StopSignal") or "SIGTERM")
        signal_pid(pid, started, sig)
        self._thaw(c)  # a frozen task acts on no signal (v1) until thawed
        if not wait_gone(pid, started, max(timeout, 0)):
            signal_pid(pid, started, signal.SIGKILL)
            self._event("kill", c, signal=int(signal.SIGKILL))
            wait_gone(pid, started, 10)
        c = self._after_exit(c)
        self._event("stop", c)
        return c

    def kill(self, ref: str, sig: str | int = "KILL") -> Container:
        """Send a signal to PID 1 (docker kill; SIGKILL by default)."""
        num = parse_signal(sig)
        c = self.containers.get(ref)
        state = c.record["State"]
        if self.status(c) in ("running", "paused"):
            self._mark_stopped(c)  # docker: a killed container is not restarted by policy
        if self.status(c) not in ("running", "paused") or \
                not signal_pid(state["Pid"], state.get("PidStartTime"), num):
            raise Conflict(f"cannot kill container {c.name}: container is not running",
                           hint="pyctr ps lists the running containers")
        if num in (signal.SIGKILL, signal.SIGTERM):
            self._thaw(c)
        self._event("kill", c, signal=num)
        return c

    def wait(self, ref: str) -> int:
        """Block until the container has stopped and its exit is recorded; its exit code.

        A created container is waited for until it has run (as docker does).
        The shared lock on WAIT_LOCK keeps a --rm container's record on disk
        until its exit code has been read here.
        """
        import fcntl

        from pyctr.containers import WAIT_LOCK

        c = self.containers.get(ref)
        fd = os.open(c.dir / WAIT_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            while True:
                try:
                    c = self.containers.reload(c)
                except OSError:
                    break  # removed (rm -f) meanwhile: its last record read stands
                state = c.record["State"]
                if state["Status"] == "exited":
                    break
                if state["Status"] == "running" and c.status == "running":
                    wait_gone(state["Pid"], state.get("PidStartTime"), None)
                elif state["Status"] == "running" and not c.monitor_alive:
                    self.reconcile()  # the monitor died before it could record the exit
                else:
                    time.sleep(0.01)  # created, or the monitor is recording the exit
        finally:
            os.close(fd)
        return c.record["State"].get("ExitCode", 0)

    def exec(self, ref: str, args: list[str], *, interactive: bool = False, tty: bool = False,
             detach: bool = False, env: list[str] | None = None, workdir: str | None = None,
             user: str | None = None) -> int | None:
        """Run ``args`` inside a running container (docker exec): its exit code, or None with
        ``detach``.  The process joins every namespace and the cgroup of PID 1 and gets
        the container's capabilities, no_new_privs and seccomp filter."""
        from pyctr.run import _console_size, _forward_signals
        from pyctr.runtime import exec as rexec
        from pyctr.runtime.container import SECCOMP_CACHE
        from pyctr.runtime.users import resolve_user

        c = self.containers.get(ref)
        status = self.status(c)
        if status == "paused":
            raise Conflict(f"container {c.name} is paused, unpause the container before exec")
        if status != "running":
            raise Conflict(f"container {c.name} is not running",
                           hint=f"start it first: pyctr start {c.name}")
        with open(c.dir / "config.json") as f:
            spec = json.load(f)
        proc = dict(spec["process"], args=list(args), terminal=tty)
        proc.pop("consoleSize", None)
        size = _console_size() if tty else None
        if size:
            proc["consoleSize"] = {"height": size[0], "width": size[1]}
        proc["env"] = B.merge_env(proc.get("env", []), B.parse_env(env or []))
        if workdir:
            if not workdir.startswith("/"):
                raise UserError(f"the working directory '{workdir}' is invalid, it needs to "
                                "be an absolute path")
            proc["cwd"] = workdir
        if user:
            u = resolve_user(c.rootfs, user)
            proc["user"] = {"uid": u.uid, "gid": u.gid, "additionalGids": u.additional_gids}
            proc["env"] = B.merge_env(proc["env"], [f"HOME={u.home}"], B.parse_env(env or []))
        devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        # detached: nothing of ours is kept open (docker exec -d gives it no stdio)
        stdio = (devnull,) * 3 if detach else (0 if interactive else devnull, 1, 2)
        try:
            ex = rexec.exec_process(c.id, self.runtime_root, proc, stdin=stdio[0],
                                    stdout=stdio[1], stderr=stdio[2],
                                    seccomp_cache=str(self.runtime_root / SECCOMP_CACHE))
        finally:
            os.close(devnull)
        try:
            ex.started()
        except BaseException:
            os.waitpid(ex.pid, 0)
            raise
        if detach:
            if ex.console_fd is not None:
                os.close(ex.console_fd)
            return None
        with _forward_signals(ex.pid):
            if ex.console_fd is not None:
                from pyctr.tty import relay
                try:
                    relay(ex.console_fd, interactive=interactive)
                finally:
                    os.close(ex.console_fd)
            _, status_ = os.waitpid(ex.pid, 0)
        return os.waitstatus_to_exitcode(status_) if os.WIFEXITED(status_) \
            else 128 + os.WTERMSIG(status_)

    def exec_captured(self, ref: str, args: list[str], **kwargs) -> tuple[int, str]:
        """exec with its stdout and stderr captured (the Python API's exec): (code, output).

        The exec runs in a forked child whose stdio are the pipe, so this
        process's own fds are never touched."""
        from pyctr.runtime.process import check_single_threaded

        check_single_threaded()
        r, w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 125
            try:
                devnull = os.open(os.devnull, os.O_RDONLY)
                os.dup2(devnull, 0)
                os.dup2(w, 1)
                os.dup2(w, 2)
                code = self.exec(ref, args, **kwargs) or 0
            except PyctrError as exc:
                os.write(2, f"pyctr: {exc.render()}\n".encode())
                code = exc.exit_code
            except BaseException:  # noqa: BLE001
                code = 125
            finally:
                os._exit(code)
        os.close(w)
        chunks = []
        while data := os.read(r, 65536):
            chunks.append(data)
        os.close(r)
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status), b"".join(chunks).decode(errors="replace")

    def attach(self, ref: str, *, stdin: bool = True, sig_proxy: bool = True,
               from_start: bool = False) -> int:
        """docker attach: the container's output from now on (``from_start``: since this
        run of it began) to ours, what we type to its stdin (a -i container), our
        signals to PID 1; its exit code when it stops."""
        import select

        from pyctr.run import FORWARDED_SIGNALS
        from pyctr.shim import log_path, stdin_path

        c = self.containers.get(ref)
        if self.status(c) not in ("running", "paused") and not from_start:
            raise Conflict("you cannot attach to a stopped container, start it first",
                           hint=f"pyctr start -a {c.name}")
        fifo = None
        if stdin and c.record["Config"].get("OpenStdin"):
            fifo = os.open(stdin_path(c), os.O_WRONLY | os.O_CLOEXEC)
        if sig_proxy:
            for sig in FORWARDED_SIGNALS:
                signal.signal(sig, lambda signum, _f, ref=c.id: self._proxy(ref, signum))
        with open(log_path(c), "rb") as f:
            since = parse_time(c.record["State"].get("StartedAt", "")) if from_start else None
            if since is None:
                f.seek(0, os.SEEK_END)
            reader = LogTail(f, since)  # from_start: this run's lines so far, then on
            while True:
                alive = self.status(c) in ("running", "paused")
                ready, _, _ = select.select([0] if fifo is not None else [], [], [], 0.05)
                if ready:
                    data = os.read(0, 65536)
                    if data:
                        os.write(fifo, data)
                    else:
                        os.close(fifo)  # our stdin ended: the container's stays open
                        fifo = None
                new = reader.read()
                if new is not None:
                    for record in new:
                        _write_record(record)
                elif not alive and not c.monitor_alive:
                    break
        if fifo is not None:
            os.close(fifo)
        return self.wait(c.id)

    def _proxy(self, ref: str, signum: int) -> None:
        import contextlib

        with contextlib.suppress(PyctrError):  # gone meanwhile: the loop sees it
            self.kill(ref, signum)

    def restart(self, ref: str, timeout: float | None = None) -> Container:
        c = self.stop(ref, timeout)
        c = self.start(c.id)
        self._event("restart", c)
        return c

    def _mark_stopped(self, c: Container) -> None:
        """docker's "has been manually stopped": unless-stopped and on-failure leave it be."""
        try:
            with self.containers._lock():
                fresh = self.containers.reload(c)
                fresh.record["State"]["ManuallyStopped"] = True
                fresh.save()
            c.record = fresh.record
        except OSError:
            pass

    def _thaw(self, c: Container) -> None:
        mgr = self.cgroup(c)
        try:
            if mgr is not None and mgr.exists and mgr.frozen:
                mgr.thaw()
        except OSError:
            pass

    def _after_exit(self, c: Container) -> Container:
        """PID 1 is gone: wait for its monitor to record the exit (bounded), then re-read.

        A monitor that died first (kill -9 of a shim or of `pyctr run`)
        records nothing: reconcile gives the container its end.
        """
        from pyctr.shim import wait_until

        wait_until(lambda: not c.monitor_alive, 10)
        if c.record["State"].get("MonitorPid") == os.getpid():
            return c
        try:
            c = self.containers.get(c.id)
        except Exception:  # noqa: BLE001 - a --rm container is gone: its last record stands
            return c
        if c.record["State"]["Status"] == "running":
            self.reconcile()
            c = self.containers.get(c.id)
        return c

    # ---- logs -----------------------------------------------------------------------

    def logs(self, ref: str, *, follow: bool = False, tail: int | None = None,
             since: float | None = None) -> Iterator[dict]:
        """The container's json-file records ({"log", "stream", "time"}), oldest first.

        ``tail``: only the last N; ``since``: only those at or after a unix
        time; ``follow``: then wait for new ones until the container stops.
        """
        from pyctr.shim import log_path

        c = self.containers.get(ref)
        path = log_path(c)
        try:
            f = open(path, "rb")  # noqa: SIM115 - held open across the follow loop
        except FileNotFoundError:
            return
        with f:
            tail_ = LogTail(f, since)
            records = tail_.read() or []
            if tail is not None and tail >= 0:
                records = records[len(records) - tail:] if tail else []
            yield from records
            if not follow:
                return
            while True:
                alive = self.status(c) in ("running", "paused") or c.monitor_alive
                new = tail_.read()
                if new is not None:
                    yield from new
                elif not alive:
                    return
                else:
                    time.sleep(0.05)


class LogTail:
    """The whole records of a json-file log as they are appended (a line the shim is still
    writing is kept until its newline comes)."""

    def __init__(self, f, since: float | None = None) -> None:
        self.f, self.since, self.partial = f, since, b""

    def read(self) -> list[dict] | None:
        """The new records (None: nothing new at all)."""
        data = self.f.read()
        if not data:
            return None
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        return [r for r in map(_parse, lines) if r and _after(r, self.since)]


def _write_record(record: dict) -> None:
    os.write(2 if record.get("stream") == "stderr" else 1, record.get("log", "").encode())


def _parse(line: bytes) -> dict | None:
    try:
        return json.loads(line)
    except ValueError:
        return None


def _after(record: dict, since: float | None) -> bool:
    return since is None or parse_time(record.get("time", "")) >= since


def parse_time(text: str) -> float:
    """The unix time of an RFC 3339 stamp as the shim writes them (nanoseconds kept to µs)."""
    import calendar

    if not text:
        return 0.0
    main, _, frac = text.rstrip("Z").partition(".")
    t = calendar.timegm(time.strptime(main, "%Y-%m-%dT%H:%M:%S"))
    return t + (float("0." + frac) if frac else 0.0)


def parse_since(text: str, now: float | None = None) -> float:
    """docker's --since: a unix time, an RFC 3339 time, or a duration back from now (10m, 1h30m)."""
    import re

    now = time.time() if now is None else now
    value = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    m = re.fullmatch(r"((?:\d+(?:\.\d+)?(?:h|m|s|ms))+)", value)
    if m:
        units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
        total = sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", value))
        return now - total
    try:
        if "T" in value:
            return parse_time(value)
        return parse_time(value + "T00:00:00Z")
    except ValueError:
        raise UserError(f'invalid value for --since: "{text}"',
                        hint="a unix time, a date (2026-11-25), an RFC 3339 time "
                             "(2026-11-25T10:00:00Z) or a duration back from now (10m, 1h)") \
            from None
