"""From an image config and `pyctr run` flags to an OCI bundle's config.json.

This is the engine's half of what docker does before it calls runc: merge
the image's Entrypoint/Cmd/Env/WorkingDir/User with the user's flags, and
describe volumes, tmpfs mounts and the generated /etc files as OCI mounts.
Everything here is pure (no syscalls), so it is tested without root.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from pyctr.errors import UserError

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# plain strings, compiled by re's own cache when first used: compiling them
# at import would cost every command a millisecond
_HOSTNAME_RE = (r"^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
                r"(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$")
_NAME_RE = r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$"


@dataclass
class Mount:
    """A bind or tmpfs mount the user asked for (-v, --tmpfs)."""

    destination: str
    type: str  # "bind" or "tmpfs"
    source: str = ""
    readonly: bool = False
    options: list[str] = field(default_factory=list)


def _no_limits():
    from pyctr.limits import LimitFlags
    return LimitFlags()


def _default_network():
    from pyctr.network import NetOptions
    return NetOptions()


@dataclass
class RunOptions:
    """The flags of `pyctr run`, as docker spells them."""

    image: str
    command: list[str] = field(default_factory=list)
    name: str | None = None
    rm: bool = False
    env: list[str] = field(default_factory=list)
    env_files: list[str] = field(default_factory=list)
    workdir: str | None = None
    user: str | None = None
    hostname: str | None = None
    entrypoint: str | None = None
    interactive: bool = False
    tty: bool = False
    read_only: bool = False
    volumes: list[str] = field(default_factory=list)
    tmpfs: list[str] = field(default_factory=list)
    limits: object = field(default_factory=_no_limits)  # pyctr.limits.LimitFlags
    cgroup_parent: str | None = None
    net: object = field(default_factory=_default_network)  # pyctr.network.NetOptions
    init: bool = False
    restart: str = "no"


def parse_restart(policy: str, *, rm: bool = False) -> dict:
    """--restart no|always|unless-stopped|on-failure[:N], as docker's HostConfig.RestartPolicy."""
    name, _, count = policy.partition(":")
    if name not in ("no", "always", "unless-stopped", "on-failure") or \
            (count and (name != "on-failure" or not count.isdigit())):
        raise UserError(f'invalid restart policy "{policy}"',
                        hint="no, always, unless-stopped or on-failure[:MAX_RETRIES]")
    if rm and name != "no":
        raise UserError("conflicting options: --restart and --rm",
                        hint="a container removed at its exit cannot be restarted")
    return {"Name": name, "MaximumRetryCount": int(count or 0)}


INIT_PATH = "/sbin/docker-init"  # where docker puts its init in the container
INIT_BINARIES = ("/usr/bin/tini-static", "/usr/bin/catatonit", "/usr/libexec/podman/catatonit")


def find_init(candidates: tuple[str, ...] = INIT_BINARIES) -> str:
    """--init: a static init from the host (tini-static or catatonit, Debian packages).

    Static, because it runs in the container's rootfs, whose libc may be
    another or none at all (busybox)."""
    for path in candidates:
        if os.access(path, os.X_OK):
            return path
    raise UserError("--init needs a static init on the host: none of "
                    + ", ".join(candidates) + " exists",
                    hint="apt-get install tini (or catatonit)")


def init_mounts(opts: RunOptions) -> list[dict]:
    """The init bound read-only at /sbin/docker-init, as docker does."""
    if not opts.init:
        return []
    return [{"destination": INIT_PATH, "type": "bind", "source": find_init(),
             "options": ["rbind", "rprivate", "ro", "nosuid", "nodev"]}]


def with_init(args: list[str], opts: RunOptions) -> list[str]:
    """PID 1 is the init, which runs the command as its child: it forwards signals
    to it and reaps every orphan that is reparented to PID 1."""
    return [INIT_PATH, "--", *args] if opts.init else args


def options_to_record(opts: RunOptions, *, env: list[str]) -> dict:
    """The options as a JSON record, ``env`` already resolved (env files read, ``-e K`` copied):
    a later start or restart makes the same container whatever the caller's environment."""
    from dataclasses import asdict

    record = asdict(opts)
    record.update(env=list(env), env_files=[])
    return record


def options_from_record(record: dict) -> RunOptions:
    from pyctr.limits import LimitFlags
    from pyctr.network import NetOptions

    d = dict(record)
    d["limits"] = LimitFlags(**d.get("limits", {}))
    d["net"] = NetOptions(**d.get("net", {}))
    return RunOptions(**d)


def validate_name(name: str) -> str:
    if not re.match(_NAME_RE, name):
        raise UserError(f'invalid container name "{name}"',
                        hint="only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    return name


def validate_hostname(hostname: str) -> str:
    if len(hostname) > 64 or not re.match(_HOSTNAME_RE, hostname):
        raise UserError(f'invalid hostname "{hostname}"',
                        hint="letters, digits, '-' and '.', at most 64 characters")
    return hostname


def parse_env(entries: list[str], *, source: str = "--env") -> list[str]:
    """``-e K=V`` sets K; ``-e K`` copies K from the caller's environment (dropped if unset)."""
    out = []
    for entry in entries:
        key, sep, _ = entry.partition("=")
        if not key or any(c.isspace() for c in key):
            raise UserError(f'invalid environment variable "{entry}" in {source}',
                            hint="use NAME=VALUE or NAME (to pass the current value)")
        if sep:
            out.append(entry)
        elif key in os.environ:
            out.append(f"{key}={os.environ[key]}")
    return out


def read_env_file(path: str) -> list[str]:
    """docker's --env-file: one NAME=VALUE per line, '#' comments, no quotes processing."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise UserError(f"cannot read env file {path}: {exc.strerror}",
                        hint="--env-file takes a path to a file of NAME=VALUE lines") from None
    lines = []
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            lines.extend(parse_env([line.lstrip()], source=f"{path}:{lineno}"))
        except UserError as exc:
            raise exc from None
    return lines


def merge_env(*layers: list[str]) -> list[str]:
    """Later layers override earlier ones, keeping first-seen order."""
    merged: dict[str, str] = {}
    for layer in layers:
        for entry in layer:
            key, _, value = entry.partition("=")
            merged[key] = value
    return [f"{k}={v}" for k, v in merged.items()]


def name_anonymous_volumes(specs: list[str]) -> tuple[list[str], list[str]]:
    """``-v /data`` (no source) is an anonymous volume: named here by a random id, once,
    at create, so every start mounts the same one; `rm -v` removes it."""
    out, names = [], []
    for spec in specs:
        if ":" not in spec and spec.startswith("/"):
            name = os.urandom(32).hex()
            names.append(name)
            spec = f"{name}:{spec}"
        out.append(spec)
    return out, names


def parse_volume(spec: str, *, volumes_dir: Path) -> Mount:
    """``-v HOST:CTR[:ro|rw]``; a HOST without '/' names a volume under the root dir."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise UserError(f'invalid volume specification "{spec}"',
                        hint="use -v HOST_PATH:CONTAINER_PATH[:ro] or -v NAME:CONTAINER_PATH")
    src, dst = parts[0], parts[1]
    mode = parts[2] if len(parts) == 3 else "rw"
    if mode not in ("ro", "rw"):
        raise UserError(f'invalid mode "{mode}" in volume specification "{spec}"',
                        hint="the mode is ro or rw")
    if not dst.startswith("/"):
        raise UserError(f'invalid volume specification "{spec}": '
                        f'container path "{dst}" is not absolute')
    if dst == "/":
        raise UserError(f'invalid volume specification "{spec}": cannot mount over /')
    if src.startswith("/"):
        source = os.path.normpath(src)
    elif "/" in src or src.startswith("."):
        raise UserError(f'invalid volume specification "{spec}": '
                        f'host path "{src}" is not absolute', hint="use an absolute host path")
    else:
        validate_name(src)
        source = str(volumes_dir / src / "_data")
    return Mount(destination=os.path.normpath(dst), type="bind", source=source,
                 readonly=mode == "ro", options=["rbind"])


def parse_tmpfs(spec: str) -> Mount:
    """``--tmpfs PATH[:OPTIONS]``, docker's defaults noexec,nosuid,nodev."""
    path, _, opts = spec.partition(":")
    if not path.startswith("/"):
        raise UserError(f'invalid tmpfs "{spec}": path "{path}" is not absolute',
                        hint="use --tmpfs /PATH[:size=64m,mode=1777]")
    options = ["nosuid", "nodev", "noexec"]
    for opt in filter(None, opts.split(",")):
        if opt == "exec":
            options.remove("noexec")
        elif opt not in options:
            options.append(opt)
    return Mount(destination=os.path.normpath(path), type="tmpfs", source="tmpfs",
                 options=options)


def process_args(image_config: dict, opts: RunOptions) -> list[str]:
    """docker's rule: --entrypoint resets the image's Cmd; args replace Cmd."""
    if opts.entrypoint is not None:
        entrypoint = [opts.entrypoint] if opts.entrypoint else []
        cmd = list(opts.command)
    else:
        entrypoint = list(image_config.get("Entrypoint") or [])
        cmd = list(opts.command) if opts.command else list(image_config.get("Cmd") or [])
    args = entrypoint + cmd
    if not args:
        raise UserError(f"no command specified for image {opts.image}",
                        hint="give a command after the image name, or --entrypoint")
    return args


def container_env(image_config: dict, opts: RunOptions, *, hostname: str,
                  home: str) -> list[str]:
    env = merge_env(
        [f"PATH={DEFAULT_PATH}", f"HOSTNAME={hostname}"],
        list(image_config.get("Env") or []),
        *(read_env_file(f) for f in opts.env_files),
        parse_env(opts.env),
    )
    if opts.tty and not any(e.startswith("TERM=") for e in env):
        env.append("TERM=xterm")
    if not any(e.startswith("HOME=") for e in env):
        env.append(f"HOME={home}")
    return env


def effective_user(image_config: dict, opts: RunOptions) -> str:
    return opts.user if opts.user is not None else (image_config.get("User") or "")


def effective_workdir(image_config: dict, opts: RunOptions) -> str:
    cwd = opts.workdir or image_config.get("WorkingDir") or "/"
    if not cwd.startswith("/"):
        raise UserError(f'the working directory "{cwd}" is invalid: it needs to be an '
                        "absolute path", hint="use -w /PATH")
    return cwd


def oci_mounts(user_mounts: list[Mount], etc_files: dict[str, Path]) -> list[dict]:
    """The user's -v/--tmpfs mounts and the generated /etc files, as OCI mounts."""
    out = []
    for dest, src in etc_files.items():
        out.append({"destination": dest, "type": "bind", "source": str(src),
                    "options": ["rbind", "rprivate"]})
    for m in user_mounts:
        if m.type == "bind":
            opts = ["rbind", "rprivate"] + (["ro"] if m.readonly else ["rw"])
            out.append({"destination": m.destination, "type": "bind",
                        "source": m.source, "options": opts})
        else:
            out.append({"destination": m.destination, "type": "tmpfs",
                        "source": "tmpfs", "options": list(m.options)})
    return out


def apply_run_options(spec: dict, *, args: list[str], env: list[str], cwd: str,
                      uid: int, gid: int, additional_gids: list[int], hostname: str,
                      terminal: bool, read_only: bool, mounts: list[dict],
                      console_size: tuple[int, int] | None = None,
                      cgroups_path: str | None = None, resources: dict | None = None,
                      netns_path: str | None = None, host_network: bool = False) -> dict:
    """Fill the runtime's default spec with what this container needs."""
    proc = spec["process"]
    proc["args"] = args
    proc["env"] = env
    proc["cwd"] = cwd
    proc["terminal"] = terminal
    proc["user"] = {"uid": uid, "gid": gid}
    if additional_gids:
        proc["user"]["additionalGids"] = additional_gids
    if terminal and console_size:
        proc["consoleSize"] = {"height": console_size[0], "width": console_size[1]}
    spec["hostname"] = hostname
    spec["root"]["readonly"] = read_only
    spec["mounts"] = list(spec.get("mounts", [])) + mounts
    linux = spec.setdefault("linux", {})
    namespaces = []
    for ns in linux.get("namespaces", []):
        if ns.get("type") == "network":
            if host_network:
                continue  # --network host: the host's own namespace
            if netns_path:
                ns = {"type": "network", "path": netns_path}  # made by the engine, joined
        namespaces.append(ns)
    linux["namespaces"] = namespaces
    if cgroups_path:
        linux["cgroupsPath"] = cgroups_path
    if resources:
        # the runtime's defaults (the device allow-list) stay; the limits are added
        linux["resources"] = {**linux.get("resources", {}), **resources}
    return spec


def hosts_file(hostname: str) -> str:
    return ("127.0.0.1\tlocalhost\n"
            "::1\tlocalhost ip6-localhost ip6-loopback\n"
            "fe00::0\tip6-localnet\n"
            "ff00::0\tip6-mcastprefix\n"
            "ff02::1\tip6-allnodes\n"
            "ff02::2\tip6-allrouters\n"
            f"127.0.1.1\t{hostname}\n")


def resolv_conf(host_resolv: str) -> str:
    """The host's resolv.conf without loopback nameservers, which cannot work inside.

    With no network yet (a later issue) the container has only lo; the file
    is still what a docker user expects to see.
    """
    kept = []
    for line in host_resolv.splitlines():
        words = line.split()
        if words[:1] == ["nameserver"] and len(words) > 1 and (
                words[1].startswith("127.") or words[1] == "::1"):
            continue
        kept.append(line)
    if not any(line.split()[:1] == ["nameserver"] for line in kept):
        kept += ["nameserver 8.8.8.8", "nameserver 8.8.4.4"]
    return "\n".join(kept) + "\n"
