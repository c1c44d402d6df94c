"""Image verbs: images, load, import, tag, rmi."""

from __future__ import annotations

import click

from pyctr.cli import fmt


@click.command()
@click.option("-q", "--quiet", is_flag=True, help="Only show image IDs.")
@click.option("--no-trunc", is_flag=True, help="Don't truncate output.")
@click.option("--format", "format_", type=click.Choice(["table", "json"]), default="table",
              help="json: one object per image and name, as docker prints them.")
@click.argument("reference", required=False, metavar="[REPOSITORY[:TAG]]")
@click.pass_obj
def images(engine, quiet, no_trunc, format_, reference) -> None:
    """List images (those of REPOSITORY[:TAG] only, when given)."""
    import json

    rows = []
    for i in engine.images.list():
        short = i.id if no_trunc else i.id.split(":", 1)[-1][:12]
        for name in i.names or ["<none>:<none>"]:
            repo, _, tag = name.rpartition(":")
            if "/" in tag or not repo:
                repo, tag = name, ""
            if reference and reference not in (repo, name):
                continue
            rows.append({"ID": short, "Repository": repo, "Tag": tag,
                         "CreatedAt": i.created, "CreatedSince": fmt.ago(i.created),
                         "Size": fmt.human_size(i.size), "Digest": i.manifest_digest})
    if quiet:
        for short in dict.fromkeys(r["ID"] for r in rows):
            click.echo(short)
    elif format_ == "json":
        for r in rows:
            click.echo(json.dumps(r))
    else:
        fmt.table(["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"],
                  [[r["Repository"], r["Tag"], r["ID"], r["CreatedSince"], r["Size"]]
                   for r in rows])


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
    return fmt.each(images, lambda ref: engine.remove_image(ref, force=force),
                    echo=lambda ref, lines: "\n".join(lines))


COMMANDS = [images, load, import_, tag, rmi]
