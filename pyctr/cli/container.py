"""Container verbs: run, ps, rm."""

from __future__ import annotations

import time

import click

from pyctr.bundle import RunOptions
from pyctr.cli import fmt


@click.command(context_settings={"allow_interspersed_args": False,
                                "help_option_names": ["--help"]})
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
@click.option("--read-only", is_flag=True, help="Mount the container's root filesystem read-only.")
@click.option("-v", "--volume", multiple=True, metavar="HOST:CTR[:ro]", help="Bind-mount a volume.")
@click.option("--tmpfs", multiple=True, metavar="PATH[:OPTS]", help="Mount a tmpfs.")
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def run(engine, rm, name, env, env_file, workdir, user, hostname, entrypoint, interactive, tty,
        read_only, volume, tmpfs, image, command) -> int:
    """Run a command in a new container (in the foreground)."""
    import os

    if tty and interactive and not os.isatty(0):
        raise click.UsageError("the input device is not a TTY")
    opts = RunOptions(image=image, command=list(command), name=name, rm=rm, env=list(env),
                      env_files=list(env_file), workdir=workdir, user=user,
                      hostname=hostname, entrypoint=entrypoint, interactive=interactive,
                      tty=tty, read_only=read_only, volumes=list(volume), tmpfs=list(tmpfs))
    return engine.run(opts)


def _status(c) -> str:
    state = c.record["State"]
    status = c.status
    if status == "running":
        started = fmt.parse_time(state.get("StartedAt", ""))
        return f"Up {fmt.human_duration(time.time() - started)}" if started else "Up"
    if status == "exited":
        return f"Exited ({state.get('ExitCode', 0)}) {fmt.ago(state.get('FinishedAt', ''))}"
    return "Created"


def _command(c) -> str:
    import shlex
    cmd = " ".join(shlex.quote(a) for a in [c.record.get("Path", "")] + c.record.get("Args", []))
    return f'"{cmd[:19]}…"' if len(cmd) > 20 else f'"{cmd}"'


@click.command()
@click.option("-a", "--all", "show_all", is_flag=True, help="Show all containers.")
@click.option("-q", "--quiet", is_flag=True, help="Only display container IDs.")
@click.option("--no-trunc", is_flag=True, help="Don't truncate output.")
@click.option("--format", "format_", type=click.Choice(["table", "json"]), default="table")
@click.pass_obj
def ps(engine, show_all, quiet, no_trunc, format_) -> None:
    """List containers."""
    containers = [c for c in engine.containers.list() if show_all or c.status == "running"]
    if quiet:
        for c in containers:
            click.echo(c.id if no_trunc else c.id[:12])
        return
    if format_ == "json":
        out = []
        for c in containers:
            rec = dict(c.record)
            rec["State"] = dict(rec["State"], Status=c.status, Running=c.status == "running")
            out.append(rec)
        fmt.print_json(out)
        return
    rows = [[c.id if no_trunc else c.id[:12], c.record.get("Image", ""), _command(c),
             fmt.ago(c.record.get("Created", "")), _status(c), "", c.name]
            for c in containers]
    fmt.table(["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"], rows)


@click.command()
@click.option("-f", "--force", is_flag=True, help="Force the removal of a running container.")
@click.argument("containers", nargs=-1, required=True)
@click.pass_obj
def rm(engine, force, containers) -> int:
    """Remove one or more containers."""
    from pyctr.errors import PyctrError

    failed = 0
    for ref in containers:
        try:
            engine.remove_container(ref, force=force)
            click.echo(ref)
        except PyctrError as exc:
            click.echo(f"pyctr: {exc.render()}", err=True)
            failed = 1
    return failed


COMMANDS = [run, ps, rm]
