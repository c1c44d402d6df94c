"""Registry verbs: pull, push, login, logout, and save (an OCI archive of images)."""

from __future__ import annotations

import sys

import click


def _registry_options(f):
    f = click.option("--authfile", metavar="PATH", envvar="REGISTRY_AUTH_FILE",
                     help="The auth file (default ~/.config/pyctr/auth.json; docker's "
                          "~/.docker/config.json is read too).")(f)
    f = click.option("--tls-verify", type=click.BOOL, default=True, show_default=True,
                     metavar="BOOL",
                     help="false: the registry may be plain HTTP or have an unverified "
                          "certificate (always so for localhost).")(f)
    return f


def _insecure(ref_text: str, tls_verify: bool) -> tuple[str, ...]:
    if tls_verify:
        return ()
    from pyctr.images.reference import parse_reference

    return (parse_reference(ref_text).domain,)


def pull_image(engine, ref: str, *, platform: str | None = None, quiet: bool = False,
               tls_verify: bool = True, authfile: str | None = None, out=None):
    """Pull with docker's output (on ``out``); the PullResult.  `run --pull` uses it too."""
    from pyctr.images import progress
    from pyctr.images.pull import describe, pull
    from pyctr.images.reference import parse_reference

    out = out or sys.stdout
    parsed = parse_reference(ref)
    if not quiet and ":" not in ref.rsplit("/", 1)[-1] and "@" not in ref:
        click.echo("Using default tag: latest", file=out)
    with progress.make(quiet, out) as shown:
        # a process per layer: the CLI's only other thread is rich's refresh (with bars),
        # which a layer's process never touches (layerprocs.py)
        result = pull(engine.images, ref, platform=platform,
                      insecure=_insecure(ref, tls_verify), authfile=authfile, progress=shown,
                      processes=True)
        if not quiet:
            for line in describe(result, ref):
                shown.message(line)
    click.echo(str(parsed), file=out)
    return result


@click.command()
@click.option("-q", "--quiet", is_flag=True, help="Only print the image's full name.")
@click.option("--platform", metavar="OS/ARCH[/VARIANT]",
              help="Pull this platform's image of a multi-platform image (default: this "
                   "machine's).")
@_registry_options
@click.argument("reference", metavar="NAME[:TAG|@DIGEST]")
@click.pass_obj
def pull(engine, quiet, platform, authfile, tls_verify, reference) -> None:
    """Download an image from a registry (docker.io unless the name says another)."""
    pull_image(engine, reference, platform=platform, quiet=quiet, tls_verify=tls_verify,
               authfile=authfile)


@click.command()
@click.option("-q", "--quiet", is_flag=True, help="Suppress the progress output.")
@_registry_options
@click.argument("reference", metavar="NAME[:TAG]")
@click.pass_obj
def push(engine, quiet, authfile, tls_verify, reference) -> None:
    """Upload an image to the registry its name names (localhost:5000/x:1 → localhost:5000)."""
    from pyctr.images import progress
    from pyctr.images.push import push as do_push

    with progress.make(quiet) as shown:
        r = do_push(engine.images, reference, insecure=_insecure(reference, tls_verify),
                    authfile=authfile, progress=shown)
        shown.result(f"{r.tag}: digest: {r.digest} size: {r.size}")


@click.command()
@click.option("-u", "--username", metavar="USER")
@click.option("-p", "--password", metavar="PASSWORD",
              help="Insecure (it shows in ps and the shell's history): use --password-stdin.")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@_registry_options
@click.argument("server", required=False, metavar="[SERVER]")
@click.pass_obj
def login(engine, username, password, password_stdin, authfile, tls_verify, server) -> None:
    """Log in to a registry (docker.io by default); the credentials go to the auth file."""
    from pyctr.errors import UserError
    from pyctr.images import auth, registry

    host = auth.check_server(server or "docker.io")
    if password and password_stdin:
        raise UserError("--password and --password-stdin are mutually exclusive",
                        hint="use --password-stdin")
    if password:
        click.echo("WARNING! Using --password via the CLI is insecure. Use --password-stdin.",
                   err=True)
    if password_stdin:
        if not username:
            raise UserError("--password-stdin needs --username", hint="pyctr login -u USER "
                            "--password-stdin SERVER")
        password = sys.stdin.read().rstrip("\r\n")
    interactive = sys.stdin.isatty()
    if not username:
        if not interactive:
            raise UserError("no username given and no terminal to ask for one",
                            hint="pyctr login -u USER --password-stdin SERVER")
        username = click.prompt("Username", err=True)
    if not password:
        if not interactive:
            raise UserError("no password given and no terminal to ask for one",
                            hint="pass it on stdin: --password-stdin")
        password = click.prompt("Password", hide_input=True, err=True)
    if not username or not password:
        raise UserError("the username and the password must not be empty")
    insecure = {host} if not tls_verify else auth.insecure_registries()
    reg = registry.Registry(host, creds=(username, password), insecure=host in insecure)
    reg.check_login()
    path = auth.store(host, username, password, authfile)
    click.echo(f"Login Succeeded (credentials in {path})")


@click.command()
@click.option("--authfile", metavar="PATH", envvar="REGISTRY_AUTH_FILE",
              help="The auth file (default ~/.config/pyctr/auth.json).")
@click.argument("server", required=False, metavar="[SERVER]")
@click.pass_obj
def logout(engine, authfile, server) -> None:
    """Forget the credentials of a registry (docker.io by default)."""
    from pyctr.images import auth

    host = auth.check_server(server or "docker.io")
    if auth.remove(host, authfile):
        click.echo(f"Removing login credentials for {host}")
    else:
        click.echo(f"Not logged in to {host}")


@click.command()
@click.option("-o", "--output", metavar="FILE", help="Write to FILE instead of stdout.")
@click.argument("images", nargs=-1, required=True, metavar="IMAGE...")
@click.pass_obj
def save(engine, output, images) -> None:
    """Save images to an OCI archive (which `pyctr load`, skopeo and podman read)."""
    from pyctr.images.save import save as do_save

    do_save(engine.images, list(images), output)


COMMANDS = [pull, push, login, logout, save]
