"""Network verbs: network create, ls, inspect, rm."""

from __future__ import annotations

import click

from pyctr.cli import fmt


@click.group()
def network() -> None:
    """Manage networks."""


@network.command()
@click.option("--subnet", metavar="CIDR", help="Subnet, e.g. 10.90.0.0/24 (chosen if absent).")
@click.option("--gateway", metavar="IP", help="Gateway address on the bridge (.1 if absent).")
@click.argument("name")
@click.pass_obj
def create(engine, subnet, gateway, name) -> None:
    """Create a bridge network."""
    from pyctr.netns import ensure_bridge

    net = engine.networks.create(name, subnet=subnet, gateway=gateway)
    ensure_bridge(net)
    click.echo(net.id)


@network.command(name="ls")
@click.option("-q", "--quiet", is_flag=True, help="Only display network IDs.")
@click.option("--format", "format_", type=click.Choice(["table", "json"]), default="table")
@click.pass_obj
def ls(engine, quiet, format_) -> None:
    """List networks."""

    nets = engine.networks.list()
    if quiet:
        for n in nets:
            click.echo(n.id[:12])
    elif format_ == "json":
        fmt.print_json([n.to_dict() for n in nets])
    else:
        fmt.table(["NETWORK ID", "NAME", "DRIVER", "SUBNET", "SCOPE"],
                  [[n.id[:12], n.name, n.driver, n.subnet, "local"] for n in nets])


@network.command()
@click.option("-f", "--format", "format_", metavar="TEMPLATE",
              help="Print this for each network: {{.IPAM.Config}}, {{json .Containers}} …")
@click.argument("names", nargs=-1, required=True)
@click.pass_obj
def inspect(engine, format_, names) -> None:
    """Show networks as JSON, with the containers on them."""

    store = engine.networks
    out = []
    for name in names:
        net = store.get(name)
        containers = {}
        if net.driver == "bridge":
            for a in store.allocations(net.name):
                containers[a.container_id] = {"Name": a.names[0] if a.names else "",
                                              "IPv4Address": f"{a.ip}/{net.prefixlen}"}
        out.append({"Name": net.name, "Id": net.id, "Driver": net.driver, "Scope": "local",
                    "IPAM": {"Config": [{"Subnet": net.subnet, "Gateway": net.gateway}]
                             if net.subnet else []},
                    "Options": {"bridge.name": net.bridge} if net.bridge else {},
                    "Containers": containers})
    if format_:
        for item in out:
            click.echo(fmt.template(format_, item))
    else:
        fmt.print_json(out)


@network.command()
@click.argument("names", nargs=-1, required=True)
@click.pass_obj
def rm(engine, names) -> int:
    """Remove networks (refused while a container uses them)."""
    return fmt.each(names, engine.remove_network)


COMMANDS = [network]
