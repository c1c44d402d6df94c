"""The monitor of a detached container: what containerd-shim and conmon are to theirs.

`pyctr run -d` and `pyctr start` get a shim and return once the container
runs.  The shim is the one process that stays with the container for its
whole life, whoever else comes and goes (the CLI that started it, the daemon):

    pyctrd ──fork──▶ shim ──fork──▶ creator ──runtime create + start──▶ PID 1
    (asked by a worker)  │            (exits: PID 1 is reparented to the shim)
                         └── {"pid": …} or {"error": …} to the caller, on a pipe

(without the daemon the caller forks it, twice, in a session of its own).

* it is PID 1's parent (a child subreaper), so it alone can reap it and
  learn its real exit status;
* it holds the read ends of PID 1's stdout and stderr (or the pty master
  with -t; the FIFO `pyctr attach` writes to with -i) and writes every line
  to the container's json-file log, in the format docker's driver uses;
* at the exit it records ExitCode, FinishedAt and the OOM verdict, then
  releases what the container held (cgroup, network, rootfs mount) and
  removes a --rm container.

It is forked, never spawned, from a process that is single-threaded
(DESIGN.md): a fork of a threaded Python can deadlock in the child.
"""

from __future__ import annotations

import errno
import json
import os
import select
import signal
import time

from pyctr.containers import Container, now_iso
from pyctr.errors import ContainerInitError, PyctrError

CHUNK = 65536
LOG_LINE_MAX = 16 * 1024  # docker splits longer lines into 16 KiB records, as here


def log_path(c: Container):
    return c.dir / f"{c.id}-json.log"


def stdin_path(c: Container):
    """The FIFO of a -i container's stdin (for `pyctr attach`)."""
    return c.dir / "stdin.fifo"


class LogWriter:
    """docker's json-file format: one {"log", "stream", "time"} object per line of output.

    A partial line is kept until its newline (or the end of the stream, or
    16 KiB): two writes of one line make one record, as in docker.
    """

    def __init__(self, path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        self.partial: dict[str, bytes] = {}

    def write(self, stream: str, data: bytes) -> None:
        buf = self.partial.pop(stream, b"") + data
        out = []
        while True:
            nl = buf.find(b"\n")
            if nl < 0 or nl >= LOG_LINE_MAX:
                if len(buf) < LOG_LINE_MAX:
                    break
                nl = LOG_LINE_MAX - 1
            out.append(self._record(stream, buf[:nl + 1]))
            buf = buf[nl + 1:]
        if buf:
            self.partial[stream] = buf
        if out:
            os.write(self.fd, b"".join(out))

    def flush(self) -> None:
        """The end of the streams: what is left of a line without its newline is written too."""
        for stream, buf in list(self.partial.items()):
            os.write(self.fd, self._record(stream, buf))
        self.partial.clear()

    @staticmethod
    def _record(stream: str, line: bytes) -> bytes:
        text = line.decode("utf-8", errors="replace")
        return (json.dumps({"log": text, "stream": stream, "time": now_iso()},
                           ensure_ascii=False) + "\n").encode()

    def close(self) -> None:
        self.flush()
        os.close(self.fd)


def launch(engine, c: Container, opts, spec: dict) -> int:
    """Start the shim for ``c`` (rootfs, network and config.json ready); PID 1's pid.

    Returns once the container runs; raises the error that stopped it (the
    shim has recorded it and released what the container held).  In a
    worker of pyctrd the daemon itself forks the shim, from its pristine
    memory (see monitor); elsewhere this process forks it (double fork, new
    session).
    """
    from pyctr import explain

    r, w = os.pipe2(os.O_CLOEXEC)
    er, ew = os.pipe2(os.O_CLOEXEC) if explain.enabled() else (None, None)
    try:
        if not _ask_daemon(engine, c, w, ew):
            _fork_shim(engine, c, w, ew)
    finally:
        os.close(w)
        if ew is not None:
            os.close(ew)
    chunks = []
    while data := os.read(r, CHUNK):
        chunks.append(data)
    os.close(r)
    if er is not None:  # --explain: what the shim's creator did, as it did it
        with os.fdopen(er, "rb") as events:
            for line in events:
                explain.emit(json.loads(line))
    msg = json.loads(b"".join(chunks)) if chunks else {}
    if "pid" in msg:
        return msg["pid"]
    if "error" in msg:
        raise PyctrError.from_dict(msg["error"])
    raise ContainerInitError("the container's shim ended without a word",
                             step="shim", path=str(c.dir),
                             hint="run with --debug; `pyctr inspect` shows State.Error")


def _fork_shim(engine, c: Container, report: int, explained: int | None = None) -> None:
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the forked child
        code = 0
        try:
            os.setsid()  # no controlling terminal: a hang-up of the caller's is not ours
            if os.fork() == 0:
                code = monitor(engine, c.id, report, explained)
        except BaseException:  # noqa: BLE001 - nothing may escape a forked child
            code = 1
        os._exit(code)
    os.waitpid(child, 0)


def _ask_daemon(engine, c: Container, report: int, explained: int | None = None) -> bool:
    """In a pyctrd worker: ask the daemon for a shim (the report fd goes along, and the
    --explain pipe)."""
    from pyctr import daemon

    if not daemon.IN_WORKER:
        return False
    import socket

    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as s:
            s.connect(str(daemon.socket_path(engine.run_dir)))
            socket.send_fds(s, [json.dumps({"op": "shim", "id": c.id}).encode() + b"\n"],
                            [report] + ([explained] if explained is not None else []))
    except OSError:
        return False
    return True


def _report(fd: int | None, msg: dict) -> None:
    if fd is None:
        return
    try:
        os.write(fd, json.dumps(msg).encode())
    except OSError:
        pass  # the caller is gone: the record says it all
    try:
        os.close(fd)
    except OSError:
        pass


def monitor(engine, cid: str, report: int | None, explained: int | None = None) -> int:
    """See _monitor; an unexpected failure is reported to the caller, not lost.

    ``explained``: the caller's --explain pipe; the creator writes its events there.
    """
    try:
        return _monitor(engine, cid, report, explained)
    except BaseException as exc:  # noqa: BLE001 - the caller waits for a word
        if report is not None:
            err = ContainerInitError(f"the shim failed: {type(exc).__name__}: {exc}",
                                     step="shim", hint="this is a bug in pyctr")
            try:
                os.write(report, json.dumps({"error": err.to_dict()}).encode())
            except OSError:
                pass
        return 1


def _monitor(engine, cid: str, report: int | None, explained: int | None = None) -> int:
    """The shim's whole life; the exit status of the shim process.

    The shim lives as long as its container: what it pays in memory, every
    container pays.  So it does the heavy work (the runtime's create and
    start: many modules' code, many objects) in a **creator** child that
    exits once PID 1 runs; PID 1 is then reparented to the shim (a child
    subreaper).  What the shim itself touches is its loop over the output
    pipes: forked from the daemon, nearly all of its memory stays shared.
    """
    from pyctr import bundle as B
    from pyctr.daemon import set_title
    from pyctr.fsutil import pid_start_time
    from pyctr.runtime import syscalls as sc

    set_title(f"pyctr-shim {cid[:12]}")
    try:
        os.setsid()  # a session of its own: no terminal's hang-up or Ctrl-C reaches it
    except OSError:
        pass  # already a session leader
    # nothing of the caller's stays open here (a daemon worker's client socket, say);
    # the runtime's cache of rootfs fds goes first, or its fd numbers would name
    # whatever is opened next (and the init's "close fds" step would close those)
    from pyctr.runtime import inroot

    inroot.forget()
    keep = sorted({fd for fd in (report, explained) if fd is not None} | {2})
    for low, high in zip(keep, [*keep[1:], 1 << 16]):
        os.closerange(low + 1, high)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)  # a detached monitor keeps no terminal open
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    sc.set_child_subreaper()  # PID 1 becomes ours when the creator exits
    c = engine.containers.by_id(cid)
    opts = B.options_from_record(c.record["RunOptions"])
    me = os.getpid()
    state = c.record["State"]
    state.update(MonitorPid=me, MonitorStartTime=pid_start_time(me))
    c.record["LogPath"] = str(log_path(c))
    c.save()  # the watcher is the shim from now on, whatever becomes of the caller
    log = LogWriter(log_path(c))
    streams: dict[int, str] = {}
    fifo = None  # -i: `pyctr attach` writes what the user types to stdin.fifo
    if opts.interactive:
        path = stdin_path(c)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        os.mkfifo(path, 0o600)
        # read and write: the container's reads block (no EOF) while nobody is attached
        fifo = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    if opts.tty:
        stdio = (devnull, devnull, devnull)  # the runtime gives PID 1 a pty instead
    else:
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        streams = {out_r: "stdout", err_r: "stderr"}
        stdio = (fifo if fifo is not None else devnull, out_w, err_w)
    msg, console = _create(engine, c, stdio, explained)
    if explained is not None:
        os.close(explained)  # the creator's copy was the one that wrote
    for fd in set(stdio) - {devnull, fifo}:
        os.close(fd)
    pid = msg.get("pid") or 0
    if "error" in msg:
        code = 1
        if pid:
            try:
                os.waitpid(pid, 0)  # PID 1 of a failed start: reparented here
            except ChildProcessError:
                pass
        err = PyctrError.from_dict(msg["error"])
        _end(engine, c, opts, exit_code=err.exit_code, error=err.render(), log=log)
        _report(report, {"error": msg["error"]})
        return code
    _report(report, {"pid": pid})
    if fifo is not None and opts.tty:
        os.set_blocking(fifo, False)
    elif fifo is not None:
        os.close(fifo)  # the container holds it now
        fifo = None
    binary = shim_binary()
    if binary is not None:  # the rest of the container's life, in C: the same loop
        _exec_binary(binary, engine, c, pid, streams, console, fifo, log)
    if console is not None:
        streams[console] = "stdout"
    if fifo is not None:
        streams[fifo] = "stdin"  # what attach types goes to the pty
    code = _relay(pid, streams, log)
    _end(engine, c, opts, exit_code=code, log=log)
    return 0


def shim_binary() -> str | None:
    """The compiled monitor loop (pyctr/shim.c), or None: the loop then runs in Python.

    ``PYCTR_SHIM`` names it (``python``: never use it); otherwise it is
    ``pyctr-shim`` beside this interpreter (scripts/setup.sh builds it into
    the venv's bin).
    """
    path = os.environ.get("PYCTR_SHIM")
    if path == "python":
        return None
    if not path:
        import sys

        path = os.path.join(os.path.dirname(sys.executable), "pyctr-shim")
    return path if os.access(path, os.X_OK) else None


def _exec_binary(binary: str, engine, c: Container, pid: int, streams: dict[int, str],
                 console: int | None, fifo: int | None, log: LogWriter) -> None:
    """Become pyctr-shim (the same pid, children and fds; none of Python's memory).

    It relays the output to the log until PID 1 exits, reaps it, and then
    execs the finisher (``finish`` below) with the exit code: Python again,
    for the short time it takes to record the exit and release the container.
    """
    import sys

    args = [binary, "--id", c.id, "--pid", str(pid), "--log-fd", str(log.fd)]
    named = {name: fd for fd, name in streams.items()}
    for flag, fd in (("--stdout", named.get("stdout")), ("--stderr", named.get("stderr")),
                     ("--console", console), ("--stdin", fifo)):
        if fd is not None:
            args += [flag, str(fd)]
    for fd in (log.fd, *streams, console, fifo):
        if fd is not None:
            os.set_inheritable(fd, True)
    args += ["--", sys.executable, "-P", "-c",
             "import sys; from pyctr.shim import finish; sys.exit(finish(sys.argv[1:]))",
             os.path.abspath(engine.root), os.path.abspath(engine.run_dir), c.id]
    try:
        os.execv(binary, args)
    except OSError:
        for fd in (log.fd, *streams, console, fifo):
            if fd is not None:
                os.set_inheritable(fd, False)  # and the loop runs here, in Python


def finish(argv: list[str]) -> int:
    """pyctr-shim's last step, PID 1 reaped: ROOT RUN_DIR ID EXIT_CODE."""
    from pyctr import bundle as B
    from pyctr.engine import Engine

    root, run_dir, cid, code = argv
    engine = Engine(root, run_dir)
    c = engine.containers.by_id(cid)
    _end(engine, c, B.options_from_record(c.record["RunOptions"]), exit_code=int(code))
    return 0


def _create(engine, c: Container, stdio: tuple[int, int, int],
            explained: int | None = None) -> tuple[dict, int | None]:
    """Create and start the container in a child; its report and the pty master (-t)."""
    import socket

    from pyctr.runtime.process import _recv

    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    creator = os.fork()
    if creator == 0:  # pragma: no cover - the creator
        parent.close()
        code = 1
        try:
            if explained is not None:
                _explain_to(explained)
            code = _creator(engine, c, stdio, child)
        finally:
            os._exit(code)
    child.close()
    try:
        msg, fds = _recv(parent)
    finally:
        parent.close()
        os.waitpid(creator, 0)
    if msg is None:
        msg = {"error": ContainerInitError("the shim's creator died before PID 1 ran",
                                           step="shim").to_dict()}
    return msg, (fds[0] if fds else None)


def _explain_to(fd: int) -> None:
    """--explain in the creator: one JSON line per event, to the caller's pipe."""
    from pyctr import explain

    def send(event: dict) -> None:
        try:
            os.write(fd, (json.dumps(event) + "\n").encode())
        except OSError:
            pass  # the caller is gone: the container is made all the same

    explain.relay(send)


def _creator(engine, c: Container, stdio: tuple[int, int, int], report) -> int:
    import socket

    from pyctr.fsutil import pid_start_time
    from pyctr.runtime import container as rt

    ctr = None
    try:
        ctr = rt.create(c.id, c.bundle, state_root=engine.runtime_root, stdin=stdio[0],
                        stdout=stdio[1], stderr=stdio[2], durable=c.durable)
        state = c.record["State"]
        state.update(Status="running", Running=True, Pid=ctr.pid,
                     PidStartTime=pid_start_time(ctr.pid), StartedAt=now_iso(),
                     FinishedAt="", ExitCode=0, Error="", OOMKilled=False)
        c.save()
        ctr.start()
        engine._event("start", c)
    except BaseException as exc:  # noqa: BLE001 - reported to the shim, never lost
        err = exc if isinstance(exc, PyctrError) else ContainerInitError(
            f"{type(exc).__name__}: {exc}", step="shim", hint="this is a bug in pyctr")
        report.send(json.dumps({"error": err.to_dict(),
                                "pid": ctr.pid if ctr is not None else 0}).encode())
        return 1
    data = json.dumps({"pid": ctr.pid}).encode()
    if ctr.console_fd is not None:
        socket.send_fds(report, [data], [ctr.console_fd])
    else:
        report.send(data)
    return 0


def _relay(pid: int, streams: dict[int, str], log: LogWriter) -> int:
    """Copy PID 1's output to the log until it exits; its exit code (docker's)."""
    pidfd = os.pidfd_open(pid)
    try:
        exited = False
        while streams:
            ready, _, _ = select.select([*streams, pidfd], [], [], 0.2 if exited else None)
            if not ready:
                break  # PID 1 is gone and nothing more came: a process outside kept a pipe
            for fd in ready:
                if fd == pidfd:
                    exited = True
                    continue
                try:
                    data = os.read(fd, CHUNK)
                except OSError as exc:  # EIO: the pty's last holder closed it
                    if exc.errno not in (errno.EIO, errno.EBADF):
                        raise
                    data = b""
                if data and streams[fd] == "stdin":
                    console = next(f for f, name in streams.items() if name == "stdout")
                    os.write(console, data)
                elif data:
                    log.write(streams[fd], data)
                elif streams[fd] != "stdin":
                    del streams[fd]
                    os.close(fd)
            if set(streams.values()) == {"stdin"}:
                break  # the output is done: what is left to type goes nowhere
        for fd in streams:
            os.close(fd)
        _, status = os.waitpid(pid, 0)  # ours: the creator's child, reparented to us
        return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) \
            else 128 + os.WTERMSIG(status)
    finally:
        os.close(pidfd)


def _end(engine, c: Container, opts, *, exit_code: int, log: LogWriter | None = None,
         error: str = "") -> None:
    """Record the exit and release what the container held (the monitor's last duty)."""
    from pyctr.limits import release_parent
    from pyctr.runtime import container as rt

    if log is not None:
        try:
            log.close()
        except OSError:
            pass
    try:
        os.unlink(stdin_path(c))
    except FileNotFoundError:
        pass
    oom = engine._oom_killed(c)  # before delete: the runtime removes the cgroup
    if oom and not error:
        from pyctr.limits import oom_hint
        error = oom_hint(c.record["HostConfig"].get("Resources"))
    engine._finish(c, exit_code=exit_code, error=error, oom_killed=oom, force=True)
    try:
        rt.load(c.id, engine.runtime_root).delete()  # the cgroup, the runtime's state
    except PyctrError:
        pass
    engine._release_start(c)
    release_parent(engine.root, opts.cgroup_parent)
    if opts.rm:
        engine._destroy(c)


def wait_until(predicate, timeout: float | None, interval: float = 0.01) -> bool:
    """Poll ``predicate`` until true or ``timeout`` seconds (None: forever); its last value."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while not predicate():
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True
