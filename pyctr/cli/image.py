"""Image verbs: images, load, import, tag, rmi."""

from __future__ import annotations

import click

from pyctr.cli import fmt


@click.command()
@click.option("-q", "--quiet", is_flag=True, help="Only show image IDs.")
@click.option("--no-trunc", is_flag=True, help="Don't truncate output.")
@click.option("--format", "format_", type=click.Choice(["table", "json"]), default="table")
@click.pass_obj
def images(engine, quiet, no_trunc, format_) -> None:
    """List images."""
    found = engine.images.list()
    if format_ == "json":
        fmt.print_json([{"Id": i.id, "RepoTags": i.names, "Created": i.created,
                         "Size": i.size, "ManifestDigest": i.manifest_digest,
                         "Os": i.os, "Architecture": i.architecture, "Config": i.config}
                        for i in found])
        return
    rows = []
    for i in found:
        short = i.id if no_trunc else i.id.split(":", 1)[-1][:12]
        if quiet:
            click.echo(short)
            continue
        for name in i.names or ["<none>:<none>"]:
            repo, _, tag = name.rpartition(":")
            if "/" in tag or not repo:
                repo, tag = name, ""
            rows.append([repo, tag, short, fmt.ago(i.created), fmt.human_size(i.size)])
    if not quiet:
        fmt.table(["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"], rows)


@click.command()
@click.option("-i", "--input", "path", required=True, metavar="PATH",
              help="An OCI layout dir, an OCI archive or a docker-save tar.")
@click.option("-q", "--quiet", is_flag=True, help="Suppress the load output.")
@click.pass_obj
def load(engine, path, quiet) -> None:
    """Load images from an OCI layout, an OCI archive or a `docker save` tar."""
    from pathlib import Path

    from pyctr.errors import NotFound
    p = Path(path)
    if not p.exists():
        raise NotFound(f"no such file or directory: {path}",
                       hint="pyctr load -i takes an OCI layout dir, an OCI archive or a "
                            "docker-save tar")
    for image in engine.images.load(p):
        if quiet:
            continue
        if image.names:
            for name in image.names:
                click.echo(f"Loaded image: {name}")
        else:
            click.echo(f"Loaded image ID: {image.id}")


@click.command(name="import")
@click.option("-c", "--change", multiple=True, metavar="INSTRUCTION",
              help="Apply a Dockerfile instruction to the image config, e.g. 'CMD [\"sh\"]'.")
@click.argument("file", metavar="FILE|-")
@click.argument("reference", required=False, metavar="[REPOSITORY[:TAG]]")
@click.pass_obj
def import_(engine, change, file, reference) -> None:
    """Create an image from a rootfs tarball (like `docker import`)."""
    from pathlib import Path

    from pyctr.errors import NotFound
    if file != "-" and not Path(file).exists():
        raise NotFound(f"no such file: {file}",
                       hint="pyctr import takes a tar of a root filesystem (or - for stdin)")
    image = engine.images.import_rootfs(file if file == "-" else Path(file), reference or "",
                                        changes=list(change))
    click.echo(image.id)


@click.command()
@click.argument("source", metavar="SOURCE_IMAGE[:TAG]")
@click.argument("target", metavar="TARGET_IMAGE[:TAG]")
@click.pass_obj
def tag(engine, source, target) -> None:
    """Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE."""
    engine.images.tag(source, target)


@click.command()
@click.option("-f", "--force", is_flag=True, help="Remove even if a stopped container uses it.")
@click.argument("images", nargs=-1, required=True)
@click.pass_obj
def rmi(engine, force, images) -> int:
    """Remove one or more images."""
    from pyctr.errors import PyctrError

    failed = 0
    for ref in images:
        try:
            for line in engine.remove_image(ref, force=force):
                click.echo(line)
        except PyctrError as exc:
            click.echo(f"pyctr: {exc.render()}", err=True)
            failed = 1
    return failed


COMMANDS = [images, load, import_, tag, rmi]
