"""Entry point of `pyctr`: global options, error rendering, exit statuses.

Errors a user can cause are rendered as one line (what, where, a hint) and
exit 125 like docker; `--debug` adds the traceback.
"""

from __future__ import annotations

import os
import sys

import click

from pyctr import __version__
from pyctr.errors import EXIT_ENGINE, PyctrError

# The module that defines each verb, so `pyctr run` imports pyctr.cli.container
# alone (click's documented pattern for lazily loaded subcommands).
# tests/unit/test_cli_lazy.py checks this table against each module's COMMANDS.
VERBS = {
    "run": "container", "create": "container", "ps": "container", "rm": "container", "inspect": "container",
    "pause": "container", "unpause": "container", "port": "container",
    "rename": "container", "top": "container", "container": "container",
    "start": "lifecycle", "stop": "lifecycle", "restart": "lifecycle", "kill": "lifecycle",
    "wait": "lifecycle", "logs": "lifecycle", "exec": "lifecycle", "attach": "lifecycle",
    "events": "lifecycle",
    "images": "image", "load": "image", "import": "image", "tag": "image", "rmi": "image",
    "pull": "registry", "push": "registry", "login": "registry", "logout": "registry",
    "save": "registry",
    "update": "limits", "stats": "limits",
    "network": "network",
    "info": "system", "system": "system",
}


class Group(click.Group):
    """Usage errors exit 125 like the docker CLI's, and name the help command.

    Verbs load on first use: ``get_command`` imports the one module that
    defines the verb asked for; ``list_commands`` (for --help) names them all.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(VERBS))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in VERBS:
            import importlib

            module = importlib.import_module(f"pyctr.cli.{VERBS[name]}")
            for command in module.COMMANDS:
                self.add_command(command)
        return super().get_command(ctx, name)

    def main(self, *args, **kwargs):
        kwargs.setdefault("standalone_mode", False)
        debug = "--debug" in sys.argv[1:]
        try:
            rv = super().main(*args, **kwargs)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            cmd = exc.ctx.command_path if exc.ctx else "pyctr"
            click.echo(f"pyctr: {exc.format_message()}\nSee '{cmd} --help'.", err=True)
            sys.exit(EXIT_ENGINE)
        except click.ClickException as exc:
            click.echo(f"pyctr: {exc.format_message()}", err=True)
            sys.exit(EXIT_ENGINE)
        except click.Abort:
            sys.exit(130)
        except PyctrError as exc:
            if debug:
                import traceback
                traceback.print_exc()
            click.echo(f"pyctr: {exc.render()}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            sys.exit(130)
        except Exception as exc:  # a bug: say so in one line; --debug shows where
            if debug:
                raise
            click.echo(f"pyctr: internal error: {type(exc).__name__}: {exc} "
                       "(hint: run again with --debug for the traceback, and report it)",
                       err=True)
            sys.exit(EXIT_ENGINE)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--root", envvar="PYCTR_ROOT", default="/var/lib/pyctr", show_default=True,
              help="Directory of images, layers and containers.")
@click.option("--run-dir", envvar="PYCTR_RUN_DIR", default="/run/pyctr", show_default=True,
              help="Directory of runtime state.")
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
@click.option("--no-daemon", is_flag=True, envvar="PYCTR_NO_DAEMON",
              help="Work in this process, not through pyctrd (which is then not started).")
@click.version_option(__version__, "-v", "--version", prog_name="pyctr")
@click.pass_context
def cli(ctx: click.Context, root: str, run_dir: str, debug: bool, no_daemon: bool) -> None:
    """pyctr: a teaching container runtime built directly on Linux primitives."""
    from pyctr.engine import Engine

    # root is checked when a verb first touches the stores (Engine.images,
    # Engine.containers): --help and version never do
    ctx.obj = Engine(root=root, run_dir=run_dir)
    os.umask(0o022)


@cli.command()
@click.pass_obj
def version(engine) -> None:
    """Show the versions of pyctr and of the daemon serving this run dir."""
    import platform

    from pyctr.cli.system import daemon_facts

    click.echo(f"Client: pyctr {__version__} (Python {platform.python_version()})")
    facts = daemon_facts(engine.run_dir)
    if "DaemonSocket" in facts:
        click.echo(f"Server: pyctrd {__version__}, {facts['Daemon'].split(', ', 1)[1]}, "
                   f"on {facts['DaemonSocket']}")
    else:
        click.echo("Server: pyctrd is not running for " + str(engine.run_dir))


def main() -> None:
    """Exit without the interpreter's teardown (~10 ms of module clean-up per run)."""
    try:
        cli.main(prog_name="pyctr")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    from pyctr.cli.entry import flush_and_exit

    flush_and_exit(code)


if __name__ == "__main__":
    main()
