"""The `pyctr` command: through the daemon when it runs, else in this process.

Through pyctrd, this process is a thin client: it hands its command line,
environment, working directory and stdio (as fds) to the daemon, whose
worker runs the same CLI code warm (no imports, no interpreter start),
relays the signals it gets to that worker, and exits with its status.
Only os, socket and json are imported on that path.

Local (no daemon, ``--no-daemon`` or PYCTR_NO_DAEMON=1) it runs
pyctr.cli.main here.  A verb that needs the daemon starts it when it is not
running (and says so), unless told not to.
"""

from __future__ import annotations

import os
import sys

# options of the `pyctr` group that take a value (to find the verb after them)
_VALUED = ("--root", "--run-dir")
# verbs that work without the daemon and never start it
_LOCAL = {"version", "info"}
FORWARDED = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGWINCH")


def parse_globals(argv: list[str]) -> tuple[dict, str | None]:
    """The global options given before the verb, and the verb (None for --help etc.)."""
    opts, verb, _ = split_argv(argv)
    return opts, verb


def split_argv(argv: list[str]) -> tuple[dict, str | None, list[str]]:
    """parse_globals, and the words after the verb."""
    opts: dict = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if name in _VALUED:
            if not eq:
                i += 1
                value = argv[i] if i < len(argv) else ""
            opts[name] = value
        elif arg in ("--no-daemon", "--debug"):
            opts[arg] = True
        elif arg.startswith("-"):
            return opts, None, argv[i:]  # --help, --version, a typo: click answers those
        else:
            return opts, arg, argv[i + 1:]
        i += 1
    return opts, None, []


def main() -> None:
    argv = sys.argv
    opts, verb, rest = split_argv(argv[1:])
    if verb == "system" and rest[:1] == ["stop-daemon"]:
        verb = None  # stopping the daemon must not start one first
    if verb is not None and verb not in _LOCAL and "--no-daemon" not in opts \
            and os.environ.get("PYCTR_NO_DAEMON") != "1" and os.geteuid() == 0:
        run_dir = opts.get("--run-dir") or os.environ.get("PYCTR_RUN_DIR") or "/run/pyctr"
        code = remote(argv, run_dir, opts)
        if code is not None:
            flush_and_exit(code)
    from pyctr.cli.main import main as local

    local()


def flush_and_exit(code: int) -> None:
    """Exit without the interpreter's teardown (~10 ms of module clean-up per run)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def remote(argv: list[str], run_dir: str, opts: dict) -> int | None:
    """Run ``argv`` in a worker of the daemon; its exit status (None: no daemon, run here)."""
    import socket

    path = os.path.join(run_dir, "pyctrd.sock")
    conn = _connect(socket, path)
    if conn is None:
        if os.environ.get("PYCTR_NO_AUTOSTART") == "1":
            return None
        if not _autostart(run_dir, opts):
            return None
        conn = _connect(socket, path, wait=10.0)
        if conn is None:
            return None
    import json

    request = {"op": "cli", "argv": ["pyctr", *argv[1:]], "env": dict(os.environ),
               "cwd": os.getcwd(), "umask": _umask()}
    socket.send_fds(conn, [json.dumps(request).encode() + b"\n"], [0, 1, 2])
    reader = conn.makefile("rb")
    worker = 0
    try:
        while True:
            line = reader.readline()
            if not line:
                print("pyctr: the daemon's worker ended without an exit status "
                      f"(hint: see {run_dir}/pyctrd.log)", file=sys.stderr)
                return 125
            msg = json.loads(line)
            if "pid" in msg:
                worker = msg["pid"]
                _relay_signals(worker)
            elif "exit" in msg:
                if msg.get("error"):
                    print(f"pyctr: {msg['error']}", file=sys.stderr)
                return int(msg["exit"])
    except KeyboardInterrupt:
        return 130
    finally:
        conn.close()


def _connect(socket, path: str, wait: float = 0.0):
    import time

    deadline = time.monotonic() + wait
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            s.connect(path)
            return s
        except (FileNotFoundError, ConnectionRefusedError, PermissionError):
            s.close()
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.02)


def _autostart(run_dir: str, opts: dict) -> bool:
    """Start pyctrd for this root and run dir, detached; say so once."""
    import subprocess

    root = opts.get("--root") or os.environ.get("PYCTR_ROOT") or "/var/lib/pyctr"
    log = os.path.join(run_dir, "pyctrd.log")
    exe = os.path.join(os.path.dirname(sys.executable), "pyctrd")
    cmd = [exe] if os.access(exe, os.X_OK) else [sys.executable, "-m", "pyctr.daemon"]
    try:
        os.makedirs(run_dir, mode=0o711, exist_ok=True)
        proc = subprocess.Popen([*cmd, "--root", root, "--run-dir", run_dir, "--log-file", log],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True,
                                close_fds=True)
    except OSError as exc:
        print(f"pyctr: could not start pyctrd: {exc}; running without it", file=sys.stderr)
        return False
    print(f"pyctr: started the daemon pyctrd (pid {proc.pid}, log {log}); "
          "stop it with: pyctr system stop-daemon", file=sys.stderr)
    return True


def _relay_signals(worker: int) -> None:
    import signal

    def relay(signum, _frame):
        try:
            os.kill(worker, signum)
        except ProcessLookupError:
            pass

    for name in FORWARDED:
        signal.signal(getattr(signal, name), relay)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


if __name__ == "__main__":
    main()
