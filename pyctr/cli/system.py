"""System verbs: info, system prune, system stop-daemon."""

from __future__ import annotations

import click


@click.command()
@click.option("--format", "format_", type=click.Choice(["text", "json"]), default="text")
@click.pass_obj
def info(engine, format_) -> None:
    """Host facts pyctr depends on: cgroup layout, kernel, root dir, counts."""
    import json
    import os

    from pyctr import __version__
    from pyctr.cgroups import describe, detect

    engine.reconcile()
    containers = engine.containers.list()
    statuses = [engine.status(c) for c in containers]
    cg = describe(detect())
    data = {"ServerVersion": __version__, "KernelVersion": os.uname().release,
            "OperatingSystem": _os_name(), "Architecture": os.uname().machine,
            "NCPU": os.cpu_count(), "PyctrRootDir": str(engine.root),
            "Containers": len(containers), "ContainersRunning": statuses.count("running"),
            "ContainersPaused": statuses.count("paused"),
            "ContainersStopped": statuses.count("exited") + statuses.count("created"),
            "Images": len(engine.images.list()), **daemon_facts(engine.run_dir),
            "Shim": _shim_fact(), **cg}
    if format_ == "json":
        click.echo(json.dumps(data, indent=2))
        return
    for key, value in data.items():
        click.echo(f"{key}: {value}")


def daemon_facts(run_dir) -> dict:
    """Whether pyctrd serves this run dir, and where."""
    from pyctr.daemon import LOG_NAME, daemon_pid, socket_path

    pid = daemon_pid(run_dir)
    if pid is None:
        return {"Daemon": "not running (commands work in the CLI's process)"}
    return {"Daemon": f"pyctrd running, pid {pid}", "DaemonSocket": str(socket_path(run_dir)),
            "DaemonLog": str(run_dir / LOG_NAME)}


def _shim_fact() -> str:
    import os

    from pyctr.shim import shim_binary

    path = shim_binary()
    if os.environ.get("PYCTR_SHIM") == "python":
        return "python (PYCTR_SHIM=python)"
    if path is None:
        return "python (pyctr-shim not built: scripts/setup.sh compiles pyctr/shim.c)"
    return f"{path} (pyctr/shim.c)"


def _os_name() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "Linux"


@click.group()
def system() -> None:
    """Manage pyctr itself."""


@system.command()
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation.")
@click.pass_obj
def prune(engine, force) -> None:
    """Remove stopped containers, leftover cgroups, dangling images and unused layers."""
    import sys

    if not force and sys.stdin.isatty():
        click.confirm("This will remove all stopped containers and leftover cgroups. "
                      "Continue?", abort=True)
    containers, cgroups, images = engine.prune()
    if containers:
        click.echo("Deleted Containers:\n" + "\n".join(containers) + "\n")
    if cgroups:
        click.echo("Deleted cgroups:\n" + "\n".join(cgroups) + "\n")
    if len(images) > 1:
        click.echo("Deleted Images:\n" + "\n".join(images[:-1]) + "\n")
    click.echo(images[-1] if images else "Total reclaimed space: 0B")


@system.command("stop-daemon")
@click.pass_obj
def stop_daemon(engine) -> None:
    """Stop pyctrd (containers keep running; their shims record their exits)."""
    from pyctr.daemon import daemon_pid, stop

    pid = daemon_pid(engine.run_dir)
    if pid is None:
        click.echo(f"pyctrd is not running for {engine.run_dir}", err=True)
        return
    stop(engine.run_dir, pid)
    click.echo(f"stopped pyctrd (pid {pid})")


COMMANDS = [info, system]
