"""Lifecycle verbs: start, stop, kill, wait, restart, logs, exec (the work is in pyctr/lifecycle.py)."""

from __future__ import annotations

import sys
import time

import click

from pyctr.cli import fmt


@click.command()
@click.option("-a", "--attach", is_flag=True, help="Print the container's output until it exits.")
@click.option("-i", "--interactive", is_flag=True,
              help="Attach our stdin to the container's (it must have been created with -i).")
@click.argument("containers", nargs=-1, required=True)
@click.pass_obj
def start(engine, attach, interactive, containers) -> int:
    """Start one or more created or stopped containers."""
    engine.reconcile()
    if attach or interactive:
        if len(containers) != 1:
            raise click.UsageError("you cannot start and attach multiple containers at once")
        c = engine.start(containers[0])
        if interactive:
            return engine.attach(c.id, stdin=True, from_start=True)
        _print_logs(engine, c.id, follow=True, since_start=c)
        return engine.wait(c.id)
    return fmt.each(containers, engine.start)


_stop_time = click.option(
    "-t", "--time", "timeout", type=click.IntRange(min=0), default=None,
    help="Seconds to wait for the stop signal to work before SIGKILL (default 10).")


@click.command()
@_stop_time
@click.argument("containers", nargs=-1, required=True)
@click.pass_obj
def stop(engine, timeout, containers) -> int:
    """Stop containers: their StopSignal (SIGTERM), then SIGKILL after the timeout."""
    engine.reconcile()
    return fmt.each(containers, lambda ref: engine.stop(ref, timeout))


@click.command()
@_stop_time
@click.argument("containers", nargs=-1, required=True)
@click.pass_obj
def restart(engine, timeout, containers) -> int:
    """Stop, then start containers again."""
    engine.reconcile()
    return fmt.each(containers, lambda ref: engine.restart(ref, timeout))


@click.command()
@click.option("-s", "--signal", "sig", default="KILL", show_default=True,
              help="The signal: a name (TERM, SIGHUP) or a number.")
@click.argument("containers", nargs=-1, required=True)
@click.pass_obj
def kill(engine, sig, containers) -> int:
    """Send a signal to the main process (PID 1) of running containers."""
    from pyctr.lifecycle import parse_signal

    parse_signal(sig)  # a bad signal is a usage error before any container is touched
    return fmt.each(containers, lambda ref: engine.kill(ref, sig))


@click.command()
@click.argument("containers", nargs=-1, required=True)
@click.pass_obj
def wait(engine, containers) -> int:
    """Block until containers stop; print each one's exit code."""
    return fmt.each(containers, engine.wait, echo=lambda ref, code: str(code))


@click.command()
@click.option("-f", "--follow", is_flag=True, help="Follow the output until the container stops.")
@click.option("-n", "--tail", default="all", show_default=True,
              help="Only the last N lines (or all).")
@click.option("-t", "--timestamps", is_flag=True, help="Show each line's time.")
@click.option("--since", help="Only lines since a time (2026-11-25T10:00:00Z) or a duration "
                              "back from now (10m, 1h).")
@click.argument("container")
@click.pass_obj
def logs(engine, follow, tail, timestamps, since, container) -> int:
    """Print what a detached container wrote to stdout and stderr."""
    from pyctr.errors import UserError
    from pyctr.lifecycle import parse_since

    if tail == "all":
        n = None
    elif tail.lstrip("-").isdigit():
        n = max(int(tail), -1)
        n = None if n < 0 else n
    else:
        raise UserError(f'invalid value for --tail: "{tail}"', hint="a number of lines, or all")
    _print_logs(engine, container, follow=follow, tail=n, timestamps=timestamps,
                since=parse_since(since) if since else None)
    return 0


def _print_logs(engine, ref, *, follow, tail=None, timestamps=False, since=None,
                since_start=None) -> None:
    if since_start is not None:
        from pyctr.lifecycle import parse_time
        since = parse_time(since_start.record["State"].get("StartedAt", "")) or None
    for record in engine.logs(ref, follow=follow, tail=tail, since=since):
        text = record.get("log", "")
        if timestamps:
            text = f"{record.get('time', '')} {text}"
        out = sys.stderr if record.get("stream") == "stderr" else sys.stdout
        out.write(text)
        out.flush()


@click.command(cls=fmt.ExplainCommand, context_settings={"allow_interspersed_args": False})
@click.option("-i", "--interactive", is_flag=True, help="Keep STDIN open.")
@click.option("-t", "--tty", is_flag=True, help="Allocate a pseudo-TTY.")
@click.option("-d", "--detach", is_flag=True, help="Leave the command running in the background.")
@fmt.explain_option
@click.option("-e", "--env", multiple=True, metavar="NAME[=VALUE]",
              help="Set an environment variable.")
@click.option("-w", "--workdir", help="Working directory inside the container.")
@click.option("-u", "--user", help="User (name|uid[:group|gid]) from the image's /etc/passwd.")
@click.argument("container")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_obj
def exec_(engine, interactive, tty, detach, explain, env, workdir, user, container,
          command) -> int:
    """Run a command in a running container (its namespaces, cgroup and privileges)."""
    import os

    fmt.start_explaining(explain)

    if tty and interactive and not detach and not os.isatty(0):
        raise click.UsageError("the input device is not a TTY")
    code = engine.exec(container, list(command), interactive=interactive, tty=tty,
                       detach=detach, env=list(env), workdir=workdir, user=user)
    return 0 if code is None else code


exec_.name = "exec"


@click.command()
@click.option("--no-stdin", is_flag=True, help="Do not attach stdin.")
@click.option("--sig-proxy/--no-sig-proxy", default=True, show_default=True,
              help="Forward the signals we get to the container's PID 1.")
@click.argument("container")
@click.pass_obj
def attach(engine, no_stdin, sig_proxy, container) -> int:
    """Attach to a running container's output (and stdin, if it was run with -i)."""
    return engine.attach(container, stdin=not no_stdin, sig_proxy=sig_proxy)


@click.command()
@click.option("--since", help="Events since a time or a duration back from now (10m).")
@click.option("--until", help="Events until a time or a duration back from now; then stop.")
@click.option("-f", "--filter", "filters", multiple=True, metavar="KEY=VALUE",
              help="container, event, image or type (repeatable).")
@click.option("--format", "format_", type=click.Choice(["text", "json"]), default="text")
@click.pass_obj
def events(engine, since, until, filters, format_) -> None:
    """Stream container events (create, start, die, oom, kill, stop, destroy …).

    Without --until it follows new events until interrupted (Ctrl-C)."""
    import json

    from pyctr import events as ev
    from pyctr.errors import UserError
    from pyctr.lifecycle import parse_since

    wanted: dict[str, list[str]] = {}
    for item in filters:
        key, sep, value = item.partition("=")
        if not sep or key not in ev.FILTER_KEYS:
            raise UserError(f'invalid filter "{item}"',
                            hint="use KEY=VALUE with KEY one of " + ", ".join(ev.FILTER_KEYS))
        wanted.setdefault(key, []).append(value)
    start = parse_since(since) if since else None
    end = parse_since(until) if until else None
    follow = end is None or end > time.time()
    if start is None and follow:
        start = time.time()  # docker: only new events, unless --since
    for event in ev.read(engine.run_dir, since=start, until=end, follow=follow,
                         filters=wanted):
        click.echo(json.dumps(event) if format_ == "json" else ev.text(event))


COMMANDS = [start, stop, restart, kill, wait, logs, exec_, attach, events]
