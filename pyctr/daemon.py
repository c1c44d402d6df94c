"""pyctrd: the daemon that owns the containers of one root.

One process, one thread, one loop (selectors):

* it listens on RUN_DIR/pyctrd.sock (mode 0600; a peer that is not root,
  by SO_PEERCRED, is refused);
* each request is served by a **worker**, a fork of the daemon.  The
  daemon imported everything once at start, so a worker begins warm: a
  `pyctr run --rm` through the daemon costs no interpreter start and no
  imports.  The worker is given the caller's argv, environment, working
  directory and stdio (passed as fds with SCM_RIGHTS) and runs the very
  same CLI code a local `pyctr` would; the caller relays its signals to
  the worker's pid and gets the exit status back.  Nothing is threaded:
  containers are forked from single-threaded processes only (DESIGN.md);
* it is a child subreaper: the shims of detached containers become its
  children, and it learns of each exit at once (SIGCHLD); shims it did not
  start (before a restart of the daemon) are watched through pidfds;
* restart policies (--restart) are applied when a container's monitor has
  recorded its exit, with docker's back-off (100 ms doubling, at most
  1 minute, back to 100 ms after 10 s of running);
* at start it recovers: reconcile() gives their real end to containers
  whose monitor died, running ones are watched again, and containers whose
  policy asks for it are started.

Containers never depend on the daemon: kill -9 it and they run on, their
shims record their exits, and the next daemon reads them.
"""

from __future__ import annotations

import errno
import fcntl
import gc
import json
import os
import selectors
import signal
import socket
import struct
import sys
import time
from pathlib import Path

SOCKET_NAME = "pyctrd.sock"
PID_NAME = "pyctrd.pid"
LOG_NAME = "pyctrd.log"
MAX_FDS = 3
BACKOFF_START, BACKOFF_MAX, BACKOFF_RESET_AFTER = 0.1, 60.0, 10.0
IN_WORKER = False  # true in a fork of the daemon: shims are then asked of the daemon


def socket_path(run_dir: Path | str) -> Path:
    return Path(run_dir) / SOCKET_NAME


def daemon_pid(run_dir: Path | str) -> int | None:
    """The pid of the pyctrd serving ``run_dir`` (it holds the pid file's lock), or None."""
    path = Path(run_dir) / PID_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return None  # nobody holds it: no daemon
        except BlockingIOError:
            pass
        text = os.read(fd, 32).decode().strip()
        return int(text) if text.isdigit() else None
    finally:
        os.close(fd)


def stop(run_dir: Path | str, pid: int, timeout: float = 20.0) -> None:
    """SIGTERM the daemon and wait until it has let go of its pid file."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while daemon_pid(run_dir) == pid and time.monotonic() < deadline:
        time.sleep(0.02)


def spawn(root: Path | str, run_dir: Path | str, timeout: float = 30.0):
    """Start pyctrd for ``root`` as a child of the caller (a test session, a benchmark) and
    return its Popen once its socket answers; RuntimeError with its log otherwise.  End it
    with ``end``.  (The CLI starts a detached one instead: cli/entry.py.)"""
    import subprocess

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    log_file = run_dir / LOG_NAME
    proc = subprocess.Popen([str(Path(sys.executable).parent / "pyctrd"), "--root", str(root),
                             "--run-dir", str(run_dir), "--log-file", str(log_file)],
                            stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with socket.socket(socket.AF_UNIX) as s:
            try:
                s.connect(str(socket_path(run_dir)))
                return proc
            except OSError:
                time.sleep(0.02)
    end(proc)
    text = log_file.read_text() if log_file.exists() else "(no log)"
    raise RuntimeError(f"pyctrd for {root} did not start:\n{text[-2000:]}")


def end(proc) -> None:
    """Stop a pyctrd started by ``spawn`` (SIGTERM, then SIGKILL after 20 s) and reap it."""
    import subprocess

    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def set_title(title: str) -> None:
    """What ps shows for a fork of the daemon (a worker, a shim), instead of pyctrd's argv."""
    try:
        import prctl

        prctl.set_name(title[:15])
        prctl.set_proctitle(title)
    except (ImportError, OSError, ValueError):
        pass


def log(msg: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    try:
        os.write(2, f"{stamp} pyctrd[{os.getpid()}]: {msg}\n".encode())
    except OSError:
        pass


class Daemon:
    def __init__(self, root: Path, run_dir: Path) -> None:
        from pyctr.engine import Engine

        self.root, self.run_dir = Path(root), Path(run_dir)
        self.engine = Engine(root=self.root, run_dir=self.run_dir)
        self.sel = selectors.DefaultSelector()
        self.workers: set[int] = set()
        self.watched: dict[int, tuple[int, str]] = {}  # pidfd -> (monitor pid, container id)
        self.backoff: dict[str, float] = {}  # container id -> next delay
        self.due: dict[str, float] = {}  # container id -> monotonic time of its restart
        self.stopping = False
        self.private_fds: list[int] = []  # the pid file lock, the socket, the wakeup pipe

    # ---- start-up -----------------------------------------------------------------

    def claim(self) -> int:
        """The pid file, locked for the daemon's life: one daemon per run dir."""
        self.run_dir.mkdir(parents=True, exist_ok=True, mode=0o711)
        fd = os.open(self.run_dir / PID_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.read(fd, 32).decode().strip() or "?"
            os.close(fd)
            from pyctr.errors import Conflict
            raise Conflict(f"pyctrd is already running for {self.run_dir} (pid {other})",
                           path=str(self.run_dir / PID_NAME),
                           hint="one daemon per run dir: stop it first") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd

    def listen(self) -> socket.socket:
        path = socket_path(self.run_dir)
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)  # the socket is born 0600: root only
        try:
            srv.bind(str(path))
        finally:
            os.umask(old)
        srv.listen(128)
        srv.setblocking(False)
        return srv

    def recover(self) -> None:
        """After a restart (or a crash) of the daemon: the kernel's word on every container."""
        cleaned = self.engine.reconcile()
        if cleaned:
            log(f"recovered {len(cleaned)} container(s) whose monitor had died: "
                + ", ".join(c[:12] for c in cleaned))
        self._clean_leftovers()
        for c in self.engine.containers.list():
            state = c.record["State"]
            if c.monitor_alive:
                self._watch(state["MonitorPid"], c.id)
            elif state["Status"] == "exited":
                self._consider_restart(c, after_daemon_start=True)

    def _clean_leftovers(self) -> None:
        """Half-removed container dirs and runtime state of containers that no longer exist."""
        from pyctr.fsutil import remove_tree

        for leftover in self.engine.containers.dir.glob(".removed-*"):
            remove_tree(leftover)
        known = {c.id for c in self.engine.containers.list()}
        runtime = self.engine.runtime_root
        if runtime.is_dir():
            for entry in runtime.iterdir():
                if len(entry.name) == 64 and entry.name not in known:
                    remove_tree(entry)

    # ---- the loop -----------------------------------------------------------------

    def serve(self) -> None:
        from pyctr.runtime import syscalls as sc

        sc.set_child_subreaper()
        lock = self.claim()
        srv = self.listen()
        rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # never inherited by a worker or a shim: a shim holding the pid file's lock
        # would keep the next daemon out after a crash of this one
        self.private_fds = [lock, srv.fileno(), rfd, wfd]
        signal.set_wakeup_fd(wfd)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        self.sel.register(srv, selectors.EVENT_READ, "accept")
        self.sel.register(rfd, selectors.EVENT_READ, "signal")
        self.recover()
        gc.freeze()  # what is here now is shared, untouched, with every worker and shim
        log(f"serving {self.root} on {socket_path(self.run_dir)}")
        try:
            while not self.stopping:
                timeout = None
                if self.due:
                    timeout = max(0.0, min(self.due.values()) - time.monotonic())
                for key, _ in self.sel.select(timeout):
                    if key.data == "accept":
                        self._accept(srv)
                    elif key.data == "signal":
                        self._drain(rfd)
                    else:
                        self._monitor_ended(key.fileobj)
                self._reap()
                self._run_due()
        finally:
            self.sel.close()
            srv.close()
            try:
                socket_path(self.run_dir).unlink()
            except FileNotFoundError:
                pass
            os.close(lock)
            log("stopped (containers keep running; their shims record their exits)")

    def _on_signal(self, signum, _frame) -> None:
        if signum != signal.SIGCHLD:
            self.stopping = True

    @staticmethod
    def _drain(fd: int) -> None:
        try:
            while os.read(fd, 512):
                pass
        except BlockingIOError:
            pass

    def _reap(self) -> None:
        """Reap workers and shims (we are their subreaper); an ended monitor may mean a
        restart.  A worker that became a shim (op "shim"), or that ran a container in
        the foreground, was that container's monitor."""
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.workers.discard(pid)
            for fd, (mpid, _) in list(self.watched.items()):
                if mpid == pid:
                    self._monitor_ended(fd)
                    break
            else:
                self._shim_ended(pid)

    def _shim_ended(self, pid: int) -> None:
        """A monitor that is our child has ended: a shim, or a foreground run's worker
        (every worker is looked at: one that ran no container matches no record)."""
        for c in self.engine.containers.list():
            if c.record["State"].get("MonitorPid") == pid:
                if c.record["State"]["Status"] == "running":
                    self.engine.reconcile()
                    c = self.engine.containers.get(c.id)
                self._consider_restart(c)
                return

    def _watch(self, monitor_pid: int, cid: str) -> None:
        try:
            fd = os.pidfd_open(monitor_pid)
        except ProcessLookupError:
            return
        self.watched[fd] = (monitor_pid, cid)
        self.sel.register(fd, selectors.EVENT_READ, ("monitor", cid))

    def _monitor_ended(self, fd) -> None:
        fd = fd if isinstance(fd, int) else fd.fileno()
        if fd not in self.watched:
            return
        _, cid = self.watched.pop(fd)
        self.sel.unregister(fd)
        os.close(fd)
        try:
            c = self.engine.containers.get(cid)
        except Exception:  # noqa: BLE001 - removed (--rm, rm -f): nothing to restart
            return
        if c.record["State"]["Status"] == "running":
            self.engine.reconcile()  # the monitor died before recording: it is done now
            c = self.engine.containers.get(cid)
        self._consider_restart(c)

    # ---- restart policies --------------------------------------------------------------

    def _consider_restart(self, c, *, after_daemon_start: bool = False) -> None:
        policy = c.record.get("HostConfig", {}).get("RestartPolicy") or {}
        name = policy.get("Name") or "no"
        state = c.record["State"]
        if name == "no" or state.get("Status") != "exited" or \
                c.record.get("HostConfig", {}).get("AutoRemove"):
            return
        manual = bool(state.get("ManuallyStopped"))
        if name == "on-failure":
            limit = policy.get("MaximumRetryCount") or 0
            if state.get("ExitCode", 0) == 0 or manual or \
                    (limit and c.record.get("RestartCount", 0) >= limit):
                return
        elif name == "unless-stopped" and manual:
            return
        elif name == "always" and manual and not after_daemon_start:
            return  # docker: a stopped `always` container starts again with the daemon
        ran = _seconds_between(state.get("StartedAt"), state.get("FinishedAt"))
        delay = self.backoff.get(c.id, BACKOFF_START)
        if ran is not None and ran >= BACKOFF_RESET_AFTER:
            delay = BACKOFF_START
        if after_daemon_start:
            delay = 0.0
        self.backoff[c.id] = min(max(delay, BACKOFF_START) * 2, BACKOFF_MAX)
        self.due[c.id] = time.monotonic() + delay
        log(f"restart policy {name}: {c.name} ({c.id[:12]}) exited with "
            f"{state.get('ExitCode')}; starting it again in {delay:.1f}s")

    def _run_due(self) -> None:
        """Start the containers whose back-off has passed, each in a worker (never
        waited for here: the new shim asks this loop to fork it, and is our child)."""
        now = time.monotonic()
        for cid, when in list(self.due.items()):
            if when > now:
                continue
            del self.due[cid]
            pid = self._fork(lambda cid=cid: self._restart_worker(cid))
            if pid:
                self.workers.add(pid)

    def _restart_worker(self, cid: str) -> int:
        try:
            self.engine.start(cid, restart=True)
        except Exception as exc:  # noqa: BLE001 - logged; the next exit is considered again
            log(f"restart of {cid[:12]} failed: {exc}")
            return 1
        return 0

    # ---- requests -------------------------------------------------------------------

    def _accept(self, srv: socket.socket) -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except BlockingIOError:
                return
            conn.setblocking(True)
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                    struct.calcsize("3i"))
            _pid, uid, _gid = struct.unpack("3i", creds)
            if uid != 0:
                _send(conn, {"error": "pyctrd serves root only", "exit": 125})
                conn.close()
                continue
            pid = self._fork(lambda conn=conn: self._worker(conn))
            conn.close()
            if pid:
                self.workers.add(pid)

    def _fork(self, body) -> int:
        """Fork a worker that runs ``body`` and exits with its status; 0 if the fork failed."""
        try:
            pid = os.fork()
        except OSError as exc:
            log(f"fork failed: {exc}")
            return 0
        if pid == 0:  # pragma: no cover - the worker
            code = 1
            try:
                signal.set_wakeup_fd(-1)
                for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_DFL)
                self.sel.close()
                for fd in self.private_fds + list(self.watched):
                    os.close(fd)
                global IN_WORKER
                IN_WORKER = True
                set_title("pyctrd worker")
                code = body()
            except BaseException as exc:  # noqa: BLE001 - a worker never returns to the loop
                log(f"worker failed: {type(exc).__name__}: {exc}")
            finally:
                os._exit(code if isinstance(code, int) else 1)
        return pid

    def _worker(self, conn: socket.socket) -> int:
        """Serve one request: a command line, run as the caller would run it locally."""
        msg, fds = _recv(conn)
        if msg is None:
            return 1
        if msg.get("op") == "call":
            return self._call(conn, msg)
        if msg.get("op") == "shim":  # this fresh fork of the daemon becomes the shim
            from pyctr.shim import monitor

            conn.close()
            return monitor(self.engine, msg["id"], fds[0] if fds else None,
                           fds[1] if len(fds) > 1 else None)
        if msg.get("op") != "cli":
            _send(conn, {"error": f"unknown op {msg.get('op')!r}", "exit": 125})
            return 1
        wrong = _other_root(msg.get("argv") or [], self.root)
        if wrong:
            _send(conn, {"error": wrong, "exit": 125})
            return 1
        for target, fd in enumerate(fds[:3]):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        _send(conn, {"pid": os.getpid()})  # the caller relays its signals here
        from pyctr.cli.entry import parse_globals

        _, verb = parse_globals((msg.get("argv") or [])[1:])
        if verb in FOLLOWERS:
            _end_with_caller(conn)
        code = run_cli(msg, self)
        _send(conn, {"exit": code})
        return 0


    def _call(self, conn: socket.socket, msg: dict) -> int:
        """pyctr.Client's calls: one Engine method, JSON in and out."""
        from pyctr.client import call_engine
        from pyctr.errors import PyctrError

        if msg.get("root") and Path(msg["root"]) != self.root:
            err = PyctrError(f"this pyctrd serves {self.root}, not {msg['root']}",
                             hint="give the client the daemon's root, or its own run dir")
            _send(conn, {"error": err.to_dict()})
            return 1
        try:
            result = call_engine(self.engine, msg.get("method", ""), msg.get("args") or [],
                                 msg.get("kwargs") or {})
        except PyctrError as exc:
            _send(conn, {"error": exc.to_dict()})
            return 1
        _send(conn, {"result": result})
        return 0


# commands that only read and may follow forever: they end with their caller.
# (A foreground run or exec goes on when its caller dies, as with docker.)
FOLLOWERS = {"events", "logs", "wait", "stats", "ps", "inspect", "images", "top", "port"}


def _end_with_caller(conn: socket.socket) -> None:
    """SIGIO when the caller's end of ``conn`` closes (it never writes after the request)."""
    signal.signal(signal.SIGIO, lambda *_: os._exit(0))
    fcntl.fcntl(conn.fileno(), fcntl.F_SETOWN, os.getpid())
    flags = fcntl.fcntl(conn.fileno(), fcntl.F_GETFL)
    fcntl.fcntl(conn.fileno(), fcntl.F_SETFL, flags | os.O_ASYNC)


def _other_root(argv: list[str], root: Path) -> str:
    """An error text when the command line names another root than the daemon's."""
    from pyctr.cli.entry import parse_globals

    opts, _ = parse_globals(argv[1:])
    asked = opts.get("--root") or os.environ.get("PYCTR_ROOT")
    if asked and Path(asked) != root:
        return (f"the pyctrd of this run dir serves {root}, not {asked} "
                "(hint: give each root its own --run-dir)")
    return ""


def run_cli(msg: dict, daemon: Daemon | None = None) -> int:
    """Run the CLI with the caller's argv, environment, cwd and umask; its exit status."""
    from pyctr.cli import main as cli_main

    os.environ.clear()
    os.environ.update(msg.get("env") or {})
    os.environ["PYCTR_NO_DAEMON"] = "1"  # this process is the daemon's side: no loops
    try:
        os.chdir(msg.get("cwd") or "/")
    except OSError:
        os.chdir("/")
    os.umask(msg.get("umask", 0o022))
    argv = list(msg.get("argv") or ["pyctr"])
    sys.argv = argv
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the caller's fds, now ours
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
    try:
        cli_main.cli.main(args=argv[1:], prog_name="pyctr")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    return code


def _seconds_between(start: str | None, end: str | None) -> float | None:
    from pyctr.lifecycle import parse_time

    try:
        return parse_time(end or "") - parse_time(start or "")
    except ValueError:
        return None


def _send(conn: socket.socket, msg: dict) -> None:
    try:
        conn.sendall(json.dumps(msg).encode() + b"\n")
    except OSError:
        pass  # the caller went away: the work goes on (as with docker)


def _recv(conn: socket.socket) -> tuple[dict | None, list[int]]:
    """The request: one line of JSON, its fds attached to the first bytes."""
    data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 20, MAX_FDS)
    while data and not data.endswith(b"\n"):
        more = conn.recv(1 << 20)
        if not more:
            break
        data += more
    if not data:
        return None, fds
    return json.loads(data), fds


def warm() -> None:
    """Import everything a worker may need, once: every fork then starts warm."""
    import importlib

    from pyctr.cli.main import VERBS

    for module in sorted(set(VERBS.values())):
        importlib.import_module(f"pyctr.cli.{module}")
    # and what a shim imports: a module imported in a shim is memory of its own, for
    # the container's whole life; imported here, it is shared by every shim
    for module in ("pyctr.engine", "pyctr.client", "pyctr.runtime.container",
                   "pyctr.runtime.exec", "pyctr.shim", "pyctr.cgroups", "pyctr.images.store",
                   "pyctr.images.snapshot", "pyctr.runtime.seccomp", "pyctr.limits",
                   "pyctr.network", "pyctr.netns", "pyctr.events", "pyctr.lifecycle",
                   "pyctr.runtime.users", "pyctr.runtime.spec", "pyctr.tty", "prctl",
                   "difflib", "calendar", "json.decoder", "json.encoder"):
        importlib.import_module(module)


def main(argv: list[str] | None = None) -> None:
    """pyctrd [--root DIR] [--run-dir DIR] [--log-file PATH]: serve until SIGTERM."""
    import argparse

    p = argparse.ArgumentParser(prog="pyctrd", description=main.__doc__)
    p.add_argument("--root", default=os.environ.get("PYCTR_ROOT") or "/var/lib/pyctr")
    p.add_argument("--run-dir", default=os.environ.get("PYCTR_RUN_DIR") or "/run/pyctr")
    p.add_argument("--log-file", help="where to log (default: stderr)")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("pyctrd: needs root (hint: try sudo pyctrd)", file=sys.stderr)
        sys.exit(1)
    if args.log_file:
        Path(args.log_file).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(args.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.umask(0o022)
    warm()
    from pyctr.errors import PyctrError
    try:
        Daemon(Path(args.root), Path(args.run_dir)).serve()
    except PyctrError as exc:
        print(f"pyctrd: {exc.render()}", file=sys.stderr)
        sys.exit(1)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            print(f"pyctrd: {exc}", file=sys.stderr)
            sys.exit(1)
        raise
