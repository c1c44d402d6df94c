"""Resource-limit verbs and flags: the run/update flags, stats, update."""

from __future__ import annotations

import time

import click

from pyctr.cli import fmt

_LIMIT_OPTIONS = [
    click.option("-m", "--memory", metavar="BYTES", help="Memory limit (e.g. 64m)."),
    click.option("--memory-swap", metavar="BYTES",
                 help="Memory plus swap limit; -1 for unlimited swap."),
    click.option("--memory-reservation", metavar="BYTES", help="Memory soft limit."),
    click.option("--cpus", metavar="N", help="Number of CPUs (e.g. 0.5)."),
    click.option("-c", "--cpu-shares", type=int, metavar="N", help="CPU shares (relative weight)."),
    click.option("--cpuset-cpus", metavar="LIST", help="CPUs to run on (0-3, 0,1)."),
    click.option("--cpuset-mems", metavar="LIST", help="Memory nodes to use (0-3, 0,1)."),
    click.option("--pids-limit", type=int, metavar="N", help="Maximum number of processes."),
    click.option("--blkio-weight", type=int, metavar="N", help="Block IO weight (10-1000)."),
    click.option("--device-read-bps", multiple=True, metavar="DEV:RATE",
                 help="Limit read rate from a device (e.g. /dev/sda:1mb)."),
    click.option("--device-write-bps", multiple=True, metavar="DEV:RATE",
                 help="Limit write rate to a device."),
]


# the keyword arguments limit_options adds to a command
LIMIT_PARAMS = frozenset({"memory", "memory_swap", "memory_reservation", "cpus", "cpu_shares",
                          "cpuset_cpus", "cpuset_mems", "pids_limit", "blkio_weight",
                          "device_read_bps", "device_write_bps"})


def limit_options(f):
    for option in reversed(_LIMIT_OPTIONS):
        f = option(f)
    return f


def limit_flags(values: dict):
    from pyctr.limits import LimitFlags

    return LimitFlags(memory=values["memory"], memory_swap=values["memory_swap"],
                      memory_reservation=values["memory_reservation"], cpus=values["cpus"],
                      cpu_shares=values["cpu_shares"], cpuset_cpus=values["cpuset_cpus"],
                      cpuset_mems=values["cpuset_mems"], pids_limit=values["pids_limit"],
                      blkio_weight=values["blkio_weight"],
                      device_read_bps=list(values["device_read_bps"]),
                      device_write_bps=list(values["device_write_bps"]))


@click.command()
@limit_options
@click.argument("containers", nargs=-1, required=True)
@click.pass_obj
def update(engine, containers, **limits) -> int:
    """Change the resource limits of running containers."""
    from pyctr.errors import UserError

    flags = limit_flags(limits)
    if not flags.given():
        raise UserError("you must provide one or more flags when using this command",
                        hint="e.g. pyctr update --memory 128m NAME")
    return fmt.each(containers, lambda ref: engine.update(ref, flags))


def _sample(engine, refs):
    from pyctr.errors import PyctrError

    out = {}
    for ref in refs:
        try:
            c, st = engine.stats(ref)
        except PyctrError:
            continue
        out[c.id] = (c, st, time.monotonic())
    return out


def _net_io(c) -> tuple[int, int]:
    """(received, sent) by the container: its host-side veth counts them the other way."""
    ep = (c.record.get("NetworkSettings") or {}).get("Endpoint") or {}
    name = ep.get("host_ifname")
    if not name:
        return 0, 0
    try:
        stats = f"/sys/class/net/{name}/statistics"
        with open(f"{stats}/tx_bytes") as rx, open(f"{stats}/rx_bytes") as tx:
            return int(rx.read()), int(tx.read())
    except OSError:
        return 0, 0


def _row(c, st, prev, now_t) -> dict:
    """One container's line, in docker stats' words and units (its JSON shape too)."""
    from pyctr.limits import host_memory, human_bytes

    cpu = 0.0
    if prev is not None:
        _, pst, pt = prev
        if now_t > pt:
            cpu = max(0.0, (st.cpu_usage_ns - pst.cpu_usage_ns) / ((now_t - pt) * 1e9) * 100)
    limit = st.memory_limit or host_memory()
    rx, tx = _net_io(c)
    return {"BlockIO": f"{fmt.human_size(st.io_read_bytes)} / {fmt.human_size(st.io_write_bytes)}",
            "CPUPerc": f"{cpu:.2f}%", "Container": c.id[:12], "ID": c.id[:12],
            "MemPerc": f"{st.memory_usage / limit * 100 if limit else 0:.2f}%",
            "MemUsage": f"{human_bytes(st.memory_usage)} / {human_bytes(limit)}",
            "Name": c.name, "NetIO": f"{fmt.human_size(rx)} / {fmt.human_size(tx)}",
            "PIDs": str(st.pids_current)}


_COLUMNS = [("CONTAINER ID", "ID"), ("NAME", "Name"), ("CPU %", "CPUPerc"),
            ("MEM USAGE / LIMIT", "MemUsage"), ("MEM %", "MemPerc"), ("NET I/O", "NetIO"),
            ("BLOCK I/O", "BlockIO"), ("PIDS", "PIDs")]


@click.command()
@click.option("--no-stream", is_flag=True, help="Print one sample and exit.")
@click.option("--format", "format_", type=click.Choice(["table", "json"]), default="table")
@click.argument("containers", nargs=-1)
@click.pass_obj
def stats(engine, no_stream, format_, containers) -> int:
    """Live resource usage of running containers, read from their cgroups."""
    import sys

    from pyctr.errors import NotFound

    engine.reconcile()
    refs = list(containers) or [c.id for c in engine.containers.list()
                               if engine.status(c) in ("running", "paused")]
    for ref in containers:
        engine.stats(ref)  # a clear error for a name that is not a running container
    prev = _sample(engine, refs)
    tty = sys.stdout.isatty() and not no_stream
    try:
        while True:
            time.sleep(0.5 if no_stream else 1.0)
            cur = _sample(engine, refs)
            rows = [_row(c, st, prev.get(cid), t) for cid, (c, st, t) in cur.items()]
            if format_ == "json":
                import json
                for r in rows:
                    click.echo(json.dumps(r))
            else:
                if tty:
                    click.echo("\x1b[2J\x1b[H", nl=False)  # refresh in place, as docker stats
                fmt.table([h for h, _ in _COLUMNS], [[r[k] for _, k in _COLUMNS] for r in rows])
            if no_stream:
                return 0
            if containers and not cur:
                raise NotFound("the containers have stopped")
            prev = cur
    except KeyboardInterrupt:
        return 0


COMMANDS = [update, stats]
