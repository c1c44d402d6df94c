"""pyctr.Client: containers from Python — a test suite, a script, a notebook.

    from pyctr import Client

    client = Client()                                   # the default root, /var/lib/pyctr
    box = client.run("busybox", ["sleep", "60"], detach=True, network="none")
    result = box.exec(["cat", "/etc/hostname"])         # ExecResult(exit_code=0, output=…)
    print(box.inspect()["State"]["Status"])             # running
    box.stop(timeout=1)
    box.remove()

    out = client.run("busybox", ["echo", "hi"], remove=True)   # RunResult(0, "hi\\n", id)

With a running pyctrd (its socket in the run dir) every call is made by
one of its workers, so the daemon sees every container it should watch
(restart policies); without one, the same engine code runs in this
process.  Either way the work is pyctr.engine.Engine's: the CLI is a
client of the same methods.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from pyctr.errors import PyctrError

# the Engine methods a client may call; each takes and returns JSON-able values
CALLS = ("run_options", "start", "stop", "kill", "wait", "restart", "remove", "inspect",
         "logs", "exec", "ps", "rename", "pause", "unpause", "pull")


@dataclass
class RunResult:
    exit_code: int
    output: str
    id: str


@dataclass
class ExecResult:
    exit_code: int
    output: str


class Container:
    """A handle on one container of a Client."""

    def __init__(self, client: Client, cid: str, name: str) -> None:
        self.client, self.id, self.name = client, cid, name

    def __repr__(self) -> str:
        return f"<pyctr.Container {self.name} {self.id[:12]}>"

    def inspect(self) -> dict:
        return self.client.inspect(self.id)

    @property
    def status(self) -> str:
        return self.inspect()["State"]["Status"]

    def exec(self, command: list[str], **kwargs) -> ExecResult:
        return self.client.exec(self.id, command, **kwargs)

    def logs(self) -> str:
        return self.client.logs(self.id)

    def stop(self, timeout: float | None = None) -> None:
        self.client.stop(self.id, timeout)

    def kill(self, signal: str = "KILL") -> None:
        self.client.kill(self.id, signal)

    def wait(self) -> int:
        return self.client.wait(self.id)

    def remove(self, force: bool = False) -> None:
        self.client.remove(self.id, force=force)


class Client:
    """Run, exec, inspect, stop and remove containers of one pyctr root.

    ``daemon``: True (pyctrd must run), False (never use it) or None (use it
    when it runs).  Needs root, as every pyctr command does.
    """

    def __init__(self, root: str | Path | None = None, run_dir: str | Path | None = None,
                 *, daemon: bool | None = None) -> None:
        self.root = Path(root or os.environ.get("PYCTR_ROOT") or "/var/lib/pyctr")
        self.run_dir = Path(run_dir or os.environ.get("PYCTR_RUN_DIR") or "/run/pyctr")
        self.daemon = daemon
        self._engine = None

    # ---- the transport ------------------------------------------------------------

    def _daemon_socket(self) -> socket.socket | None:
        if self.daemon is False:
            return None
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            s.connect(str(self.run_dir / "pyctrd.sock"))
            return s
        except OSError:
            s.close()
            if self.daemon:
                raise PyctrError(f"pyctrd is not running for {self.run_dir}",
                                 hint="start it (pyctrd, or systemctl start pyctrd), or use "
                                      "Client(daemon=None)") from None
            return None

    def _call(self, method: str, *args, **kwargs):
        conn = self._daemon_socket()
        if conn is None:
            if self._engine is None:
                from pyctr.engine import Engine
                self._engine = Engine(root=self.root, run_dir=self.run_dir)
            return call_engine(self._engine, method, args, kwargs)
        with conn:
            conn.sendall(json.dumps({"op": "call", "method": method, "args": args,
                                     "kwargs": kwargs, "root": str(self.root)}).encode()
                         + b"\n")
            reply = json.loads(conn.makefile("rb").readline() or b"{}")
        if "error" in reply:
            raise PyctrError.from_dict(reply["error"])
        if "result" not in reply:
            raise PyctrError("pyctrd's worker ended without an answer",
                             hint=f"see {self.run_dir}/pyctrd.log")
        return reply["result"]

    # ---- containers ---------------------------------------------------------------

    def run(self, image: str, command: list[str] | None = None, *, detach: bool = False,
            remove: bool = False, name: str | None = None, **options):
        """`pyctr run`: a Container handle with ``detach``, else a RunResult with the
        exit code and the output (stdout and stderr, in order).

        ``options`` are RunOptions fields: env=["K=V"], network="none", init=True,
        volumes=[…], workdir, user, hostname, memory="64m", restart="on-failure" …
        """
        opts = dict(options, image=image, command=list(command or []), name=name,
                    rm=remove and detach)
        cid, cname = self._call("run_options", opts)
        box = Container(self, cid, cname)
        if detach:
            return box
        code = box.wait()
        output = box.logs()
        if remove:
            box.remove(force=True)
        return RunResult(code, output, cid)

    def container(self, ref: str) -> Container:
        rec = self.inspect(ref)
        return Container(self, rec["Id"], rec["Name"])

    def inspect(self, ref: str) -> dict:
        return self._call("inspect", ref)

    def ps(self, all: bool = False) -> list[dict]:
        return self._call("ps", all)

    def start(self, ref: str) -> None:
        self._call("start", ref)

    def stop(self, ref: str, timeout: float | None = None) -> None:
        self._call("stop", ref, timeout)

    def kill(self, ref: str, signal: str = "KILL") -> None:
        self._call("kill", ref, signal)

    def wait(self, ref: str) -> int:
        return self._call("wait", ref)

    def remove(self, ref: str, *, force: bool = False, volumes: bool = False) -> None:
        self._call("remove", ref, force=force, volumes=volumes)

    def logs(self, ref: str) -> str:
        return self._call("logs", ref)

    # ---- images -------------------------------------------------------------------

    def pull(self, ref: str, *, platform: str | None = None, tls_verify: bool = True) -> dict:
        """`pyctr pull`: {"Id", "Digest", "Name"} of the image pulled (credentials from
        the auth file `pyctr login` writes)."""
        return self._call("pull", ref, platform=platform, tls_verify=tls_verify)

    def exec(self, ref: str, command: list[str], *, env: list[str] | None = None,
             workdir: str | None = None, user: str | None = None) -> ExecResult:
        code, output = self._call("exec", ref, list(command), env=env, workdir=workdir,
                                  user=user)
        return ExecResult(code, output)


def call_engine(engine, method: str, args, kwargs):
    """One client call on an Engine, with JSON-able arguments and result."""
    if method not in CALLS:
        raise PyctrError(f"no such call: {method}", hint="one of " + ", ".join(CALLS))
    if method == "run_options":
        from pyctr.bundle import RunOptions, options_from_record

        (fields,) = args
        known = set(RunOptions.__dataclass_fields__)
        net = {k: fields.pop(k) for k in ("network", "aliases", "ip", "publish", "publish_all")
               if k in fields}
        limits = {k: fields.pop(k) for k in list(fields) if k not in known}
        opts = options_from_record(dict(fields, limits=limits, net=net))
        c = engine.run_detached(opts)
        return [c.id, c.name]
    if method == "inspect":
        return engine.inspect(engine.containers.get(*args))
    if method == "ps":
        show_all = bool(args and args[0])
        return [engine.inspect(c) for c in engine.containers.list()
                if show_all or engine.status(c) in ("running", "paused")]
    if method == "remove":
        engine.reconcile()
        engine.remove_container(*args, **kwargs)
        return None
    if method == "logs":
        return "".join(r.get("log", "") for r in engine.logs(*args))
    if method == "exec":
        return list(engine.exec_captured(*args, **kwargs))
    if method == "pull":
        from pyctr.images.pull import pull
        from pyctr.images.reference import parse_reference

        (ref,) = args
        insecure = () if kwargs.get("tls_verify", True) else (parse_reference(ref).domain,)
        r = pull(engine.images, ref, platform=kwargs.get("platform"), insecure=insecure)
        return {"Id": r.image.id, "Digest": r.digest, "Name": str(parse_reference(ref))}
    result = getattr(engine, method)(*args, **kwargs)
    return result if isinstance(result, (int, str, type(None))) else None
