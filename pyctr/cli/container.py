"""Container verbs: run, create, ps, rm, inspect, pause, unpause, port."""

from __future__ import annotations

import functools
import time

import click

from pyctr.bundle import RunOptions
from pyctr.cli import fmt
from pyctr.cli.limits import LIMIT_PARAMS, limit_flags, limit_options
from pyctr.network import NetOptions


def container_options(f):
    """The flags `pyctr run` and `pyctr create` share, as docker spells them."""
    @click.option("--rm", "rm", is_flag=True, help="Remove the container when it exits.")
    @click.option("--name", help="Assign a name to the container.")
    @click.option("-e", "--env", multiple=True, metavar="NAME[=VALUE]",
                  help="Set an environment variable.")
    @click.option("--env-file", multiple=True, metavar="PATH", help="Read a file of NAME=VALUE lines.")
    @click.option("-w", "--workdir", help="Working directory inside the container.")
    @click.option("-u", "--user", help="User (name|uid[:group|gid]) from the image's /etc/passwd.")
    @click.option("-h", "--hostname", help="Container host name.")
    @click.option("--entrypoint", help="Overwrite the image's ENTRYPOINT.")
    @click.option("-i", "--interactive", is_flag=True, help="Keep STDIN open.")
    @click.option("-t", "--tty", is_flag=True, help="Allocate a pseudo-TTY.")
    @click.option("--restart", default="no", show_default=True,
                  metavar="no|always|unless-stopped|on-failure[:N]",
                  help="Restart policy, applied by the daemon when the container exits.")
    @click.option("--init", "init", is_flag=True,
                  help="Run an init (tini) as PID 1 that forwards signals and reaps zombies.")
    @click.option("--read-only", is_flag=True, help="Mount the container's root filesystem read-only.")
    @click.option("-v", "--volume", multiple=True, metavar="HOST:CTR[:ro]", help="Bind-mount a volume.")
    @click.option("--tmpfs", multiple=True, metavar="PATH[:OPTS]", help="Mount a tmpfs.")
    @click.option("--network", "--net", "network", default="bridge", show_default=True,
                  metavar="NET", help="bridge, none, host, container:NAME or a network's name.")
    @click.option("--network-alias", multiple=True, metavar="NAME",
                  help="Another name of the container on its network.")
    @click.option("--ip", metavar="IPv4", help="The container's address on a user network.")
    @click.option("-p", "--publish", multiple=True, metavar="[IP:]HOST:CTR[/PROTO]",
                  help="Publish a container's port to the host.")
    @click.option("-P", "--publish-all", is_flag=True,
                  help="Publish the image's exposed ports to free host ports.")
    @limit_options
    @click.option("--cgroup-parent", metavar="PATH",
                  help="Parent cgroup of the container's cgroup (default pyctr).")
    @click.option("--pull", "pull_policy", type=click.Choice(["missing", "always", "never"]),
                  default="missing", show_default=True,
                  help="Pull the image from its registry: when it is not here, always, never.")
    @click.option("--platform", metavar="OS/ARCH[/VARIANT]",
                  help="The platform to pull for a multi-platform image.")
    @fmt.explain_option
    @click.argument("image")
    @click.argument("command", nargs=-1, type=click.UNPROCESSED)
    @click.pass_obj
    @functools.wraps(f)
    def wrapper(engine, rm, name, env, env_file, workdir, user, hostname, entrypoint,
                interactive, tty, restart, init, read_only, volume, tmpfs, network, network_alias, ip,
                publish, publish_all, cgroup_parent, pull_policy, platform, explain, image, command,
                **rest):
        limits = {k: rest.pop(k) for k in list(rest) if k in LIMIT_PARAMS}
        _ensure_image(engine, image, pull_policy, platform)
        fmt.start_explaining(explain)
        opts = RunOptions(image=image, command=list(command), name=name, rm=rm, env=list(env),
                          env_files=list(env_file), workdir=workdir, user=user,
                          hostname=hostname, entrypoint=entrypoint, interactive=interactive,
                          tty=tty, restart=restart, init=init, read_only=read_only, volumes=list(volume),
                          tmpfs=list(tmpfs), limits=limit_flags(limits),
                          cgroup_parent=cgroup_parent,
                          net=NetOptions(network=network, aliases=list(network_alias), ip=ip,
                                         publish=list(publish), publish_all=publish_all))
        return f(engine, opts, **rest)
    return wrapper


def _ensure_image(engine, image: str, policy: str, platform: str | None) -> None:
    """docker's --pull: the image from its registry when it is missing (or always)."""
    import sys

    from pyctr.errors import NotFound, PyctrError

    if policy == "always":
        from pyctr.cli.registry import pull_image

        pull_image(engine, image, platform=platform, out=sys.stderr)
        return
    try:
        engine.images.resolve(image)
        return
    except NotFound as missing:
        if policy == "never":
            raise NotFound(f"{missing.message} (and --pull never)",
                           hint="pyctr pull it first, or drop --pull never") from None
        local = missing
    from pyctr.cli.registry import pull_image
    from pyctr.images.reference import parse_reference

    try:
        shown = parse_reference(image).familiar()
    except PyctrError:
        raise local from None  # not a name a registry could have (an id prefix, say)
    click.echo(f"Unable to find image '{shown}' locally", err=True)
    try:
        pull_image(engine, image, platform=platform, out=sys.stderr)
    except PyctrError as exc:
        raise NotFound(f"{local.message}, and pulling it failed: {exc.message}",
                       hint=exc.hint if "login" in (exc.hint or "") else local.hint) from None


_PLAIN = {"allow_interspersed_args": False, "help_option_names": ["--help"]}


@click.command(cls=fmt.ExplainCommand, context_settings=_PLAIN)
@click.option("-d", "--detach", is_flag=True,
              help="Run in the background under a shim; print the container's id.")
@container_options
def run(engine, opts: RunOptions, detach: bool) -> int:
    """Run a command in a new container (in the foreground, or -d in the background)."""
    import os

    if opts.tty and opts.interactive and not detach and not os.isatty(0):
        raise click.UsageError("the input device is not a TTY")
    if detach:
        c = engine.run_detached(opts)
        click.echo(c.id)
        return 0
    result = engine.run(opts)
    if result.hint:
        click.echo(f"pyctr: {result.hint}", err=True)
    return result.exit_code


@click.command(cls=fmt.ExplainCommand, context_settings=_PLAIN)
@container_options
def create(engine, opts: RunOptions) -> int:
    """Create a container without starting it; print its id (pyctr start runs it)."""
    c = engine.create(opts, monitor=False)
    click.echo(c.id)
    return 0


def _status(c, status: str) -> str:
    state = c.record["State"]
    if status in ("running", "paused"):
        started = fmt.parse_time(state.get("StartedAt", ""))
        up = f"Up {fmt.human_duration(time.time() - started)}" if started else "Up"
        return f"{up} (Paused)" if status == "paused" else up
    if status == "exited":
        oom = " (OOMKilled)" if state.get("OOMKilled") else ""
        return f"Exited ({state.get('ExitCode', 0)}) {fmt.ago(state.get('FinishedAt', ''))}{oom}"
    return "Created"


def _command(c) -> str:
    import shlex
    cmd = " ".join(shlex.quote(a) for a in [c.record.get("Path", "")] + c.record.get("Args", []))
    return f'"{cmd[:19]}…"' if len(cmd) > 20 else f'"{cmd}"'


FILTERS = ("id", "name", "label", "status", "exited", "ancestor")
STATUSES = ("created", "running", "paused", "exited")


def parse_filters(values) -> dict[str, list[str]]:
    """docker's --filter KEY=VALUE: values of one key are OR'd, keys are AND'd."""
    from pyctr.errors import UserError

    out: dict[str, list[str]] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or key not in FILTERS:
            raise UserError(f'invalid filter "{item}"',
                            hint="use KEY=VALUE with KEY one of " + ", ".join(FILTERS))
        if key == "status" and value not in STATUSES:
            raise UserError(f'invalid filter "status={value}"',
                            hint="a status is one of " + ", ".join(STATUSES))
        if key == "exited" and not value.lstrip("-").isdigit():
            raise UserError(f'invalid filter "exited={value}"', hint="exited takes an exit code")
        out.setdefault(key, []).append(value)
    return out


def _matches(c, status: str, filters: dict[str, list[str]]) -> bool:
    state, labels = c.record["State"], c.record.get("Config", {}).get("Labels") or {}
    tests = {
        "id": lambda v: c.id.startswith(v),
        "name": lambda v: v.lstrip("/") in c.name,
        "label": lambda v: (v.partition("=")[0] in labels and
                            (not v.partition("=")[1] or labels[v.partition("=")[0]] ==
                             v.partition("=")[2])),
        "status": lambda v: status == v,
        "exited": lambda v: status == "exited" and state.get("ExitCode") == int(v),
        "ancestor": lambda v: v in (c.record.get("Image"), c.record.get("ImageID")) or
                              c.record.get("ImageID", "").removeprefix("sha256:").startswith(v),
    }
    return all(any(tests[key](v) for v in values) for key, values in filters.items())


@click.command()
@click.option("-a", "--all", "show_all", is_flag=True, help="Show all containers.")
@click.option("-q", "--quiet", is_flag=True, help="Only display container IDs.")
@click.option("--no-trunc", is_flag=True, help="Don't truncate output.")
@click.option("-f", "--filter", "filters", multiple=True, metavar="KEY=VALUE",
              help="Filter: id, name, label, status, exited, ancestor (repeatable).")
@click.option("--format", "format_", type=click.Choice(["table", "json"]), default="table")
@click.pass_obj
def ps(engine, show_all, quiet, no_trunc, filters, format_) -> None:
    """List containers."""
    wanted = parse_filters(filters)
    engine.reconcile()
    containers = []
    for c in engine.containers.list():
        status = engine.status(c)
        # a status or exited filter looks at stopped containers too, as in docker
        if (show_all or "status" in wanted or "exited" in wanted
                or status in ("running", "paused")) and _matches(c, status, wanted):
            containers.append(c)
    if quiet:
        for c in containers:
            click.echo(c.id if no_trunc else c.id[:12])
        return
    import json

    from pyctr.network import ps_ports

    rows = []
    for c in containers:
        status = engine.status(c)
        rows.append({"ID": c.id if no_trunc else c.id[:12], "Image": c.record.get("Image", ""),
                     "Command": _command(c), "CreatedAt": c.record.get("Created", ""),
                     "RunningFor": fmt.ago(c.record.get("Created", "")), "State": status,
                     "Status": _status(c, status),
                     "Ports": ps_ports(c) if status in ("running", "paused") else "",
                     "Names": c.name,
                     "Networks": c.record.get("HostConfig", {}).get("NetworkMode", "")})
    if format_ == "json":  # one object per line, as docker ps --format json
        for r in rows:
            click.echo(json.dumps(r))
        return
    fmt.table(["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"],
              [[r["ID"], r["Image"], r["Command"], r["RunningFor"], r["Status"], r["Ports"],
                r["Names"]] for r in rows])


@click.command()
@click.option("-f", "--force", is_flag=True, help="Force the removal of a running container.")
@click.option("-v", "--volumes", is_flag=True, help="Remove its anonymous volumes too.")
@click.argument("containers", nargs=-1, required=True)
@click.pass_obj
def rm(engine, force, volumes, containers) -> int:
    """Remove one or more containers."""
    engine.reconcile()
    return fmt.each(containers, lambda ref: engine.remove_container(ref, force=force,
                                                                     volumes=volumes))


@click.command()
@click.argument("container")
@click.argument("new_name")
@click.pass_obj
def rename(engine, container, new_name) -> None:
    """Rename a container."""
    engine.rename(container, new_name)


@click.command(context_settings={"allow_interspersed_args": False})
@click.argument("container")
@click.argument("ps_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def top(engine, container, ps_args) -> None:
    """Show the processes of a running container (host ps, its options; -ef by default)."""
    import subprocess

    from pyctr.errors import PyctrError

    pids = set(engine.top_pids(container))
    r = subprocess.run(["ps", *(ps_args or ["-ef"])], capture_output=True, text=True,
                       check=False)
    if r.returncode != 0:
        raise PyctrError(f"ps {' '.join(ps_args)} failed: {r.stderr.strip()}",
                         hint="top takes the options of ps, e.g. -o pid,args")
    lines = r.stdout.splitlines()
    header = lines[0].split()
    if "PID" not in header:
        raise PyctrError("ps output has no PID column", hint="keep pid in -o")
    col = header.index("PID")
    click.echo(lines[0])
    for line in lines[1:]:
        fields = line.split(None, len(header) - 1)
        if len(fields) > col and fields[col].isdigit() and int(fields[col]) in pids:
            click.echo(line)


@click.group("container")
def container_group() -> None:
    """Manage containers."""


@container_group.command("prune")
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation.")
@click.pass_obj
def container_prune(engine, force) -> None:
    """Remove all stopped containers."""
    import sys

    if not force and sys.stdin.isatty():
        click.confirm("WARNING! This will remove all stopped containers. "
                      "Are you sure you want to continue?", abort=True)
    removed = engine.prune_containers()
    if removed:
        click.echo("Deleted Containers:\n" + "\n".join(removed) + "\n")
    click.echo(f"Total reclaimed containers: {len(removed)}")


@click.command()
@click.option("-f", "--format", "format_", metavar="TEMPLATE",
              help="Print this for each container: {{.State.Pid}}, {{json .Config}} … "
                   "(with --isolation: json).")
@click.option("--isolation", is_flag=True,
              help="The host and the container side by side, as the kernel shows them: "
                   "namespaces, PID 1, hostname, root mount, cgroup and limits, "
                   "capabilities, seccomp, no_new_privs, interfaces, uid/gid maps.")
@click.argument("containers", nargs=-1, required=True)
@click.pass_obj
def inspect(engine, format_, isolation, containers) -> int:
    """Show the state and configuration of containers as JSON (docker inspect's shape)."""
    if isolation:
        from pyctr import isolation as iso

        if len(containers) != 1:
            raise click.UsageError("--isolation shows one container at a time")
        if format_ not in (None, "json"):
            raise click.UsageError("--isolation takes --format json only")
        rows = iso.report(engine, engine.containers.get(containers[0]))
        click.echo(iso.as_json(rows) if format_ == "json" else iso.render(rows))
        return 0
    out = []
    failed = fmt.each(containers, lambda ref: out.append(_inspect_one(engine, ref)),
                      echo=lambda ref, _: None)
    if format_:
        for item in out:
            click.echo(fmt.template(format_, item))
    else:
        fmt.print_json(out)
    return failed


def _inspect_one(engine, ref: str) -> dict:
    """A container by name or id; else an image (docker inspect takes both)."""
    from pyctr.errors import NotFound, UserError

    try:
        return engine.inspect(engine.containers.get(ref))
    except NotFound as no_container:
        try:
            image = engine.images.resolve(ref)
        except (NotFound, UserError):
            raise NotFound(f"no such object: {ref}", hint=no_container.hint) from None
    from pyctr.images.reference import parse_reference

    return {"Id": image.id,
            "RepoTags": image.names,
            "RepoDigests": [f"{parse_reference(n).familiar_name()}@{image.manifest_digest}"
                            for n in image.names],
            "Created": image.created, "Architecture": image.architecture, "Os": image.os,
            "Config": image.config, "Size": image.size,
            "RootFS": {"Type": "layers", "Layers": image.diff_ids}}


@click.command()
@click.argument("containers", nargs=-1, required=True)
@click.pass_obj
def pause(engine, containers) -> int:
    """Freeze every process of containers (the cgroup freezer)."""
    return fmt.each(containers, engine.pause)


@click.command()
@click.argument("containers", nargs=-1, required=True)
@click.pass_obj
def unpause(engine, containers) -> int:
    """Thaw paused containers."""
    return fmt.each(containers, engine.unpause)


@click.command()
@click.argument("container")
@click.argument("private_port", required=False, metavar="[PRIVATE_PORT[/PROTO]]")
@click.pass_obj
def port(engine, container, private_port) -> int:
    """List a container's published ports (or the one of PRIVATE_PORT)."""
    from pyctr.errors import NotFound
    from pyctr.network import ports_of

    c = engine.containers.get(container)
    lines = ports_of(c) if engine.status(c) in ("running", "paused") else []
    if private_port:
        want = private_port if "/" in private_port else f"{private_port}/tcp"
        lines = [ln.split(" -> ", 1)[1] for ln in lines if ln.startswith(want + " ")]
        if not lines:
            raise NotFound(f"no public port '{want}' published for {c.name}")
    for line in lines:
        click.echo(line)
    return 0


COMMANDS = [run, create, ps, rm, rename, top, inspect, pause, unpause, port, container_group]
