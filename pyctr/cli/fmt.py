"""Output as docker prints it: aligned tables, human sizes and durations."""

from __future__ import annotations

import time

import click


def table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row)]
    for row in [headers] + rows:
        line = "   ".join(c.ljust(w) for c, w in zip(row[:-1], widths[:-1]))
        click.echo((line + "   " + row[-1]).rstrip() if len(row) > 1 else row[0])


def print_json(items) -> None:
    import json
    click.echo(json.dumps(items, indent=2))


def human_size(n: int) -> str:
    """docker's decimal units: 4.26MB."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.3g}{unit}" if unit != "B" else f"{n}B"
        n /= 1000
    return f"{n}B"


def parse_time(iso: str) -> float | None:
    import calendar

    if not iso:
        return None
    try:
        base = iso.split(".")[0].rstrip("Z")
        return calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


def human_duration(seconds: float) -> str:
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    m = s // 60
    if m == 1:
        return "About a minute"
    if m < 60:
        return f"{m} minutes"
    h = round(s / 3600)
    if h == 1:
        return "About an hour"
    if h < 48:
        return f"{h} hours"
    if h < 24 * 7 * 2:
        return f"{h // 24} days"
    if h < 24 * 30 * 2:
        return f"{h // 24 // 7} weeks"
    if h < 24 * 365 * 2:
        return f"{h // 24 // 30} months"
    return f"{h // 24 // 365} years"


def ago(iso: str) -> str:
    t = parse_time(iso)
    return f"{human_duration(time.time() - t)} ago" if t else ""


def each(refs, verb, *, echo=lambda ref, result: ref) -> int:
    """Do ``verb(ref)`` for every ref as docker's multi-name verbs do: print each one
    done, report each failure on stderr and go on; exit 1 if any failed."""
    from pyctr.errors import PyctrError

    failed = 0
    for ref in refs:
        try:
            result = verb(ref)
        except PyctrError as exc:
            click.echo(f"pyctr: {exc.render()}", err=True)
            failed = 1
            continue
        out = echo(ref, result)
        if out is not None:
            click.echo(out)
    return failed


# ---- --explain[=json] --------------------------------------------------------------------

class ExplainCommand(click.Command):
    """A command whose ``--explain`` takes a value only when written ``--explain=json``.

    click gives an option an optional value by taking the next word, which
    here would be the image (``pyctr run --explain busybox``): so a bare
    ``--explain`` is read as ``--explain=text`` before the parser sees it.
    Only options are looked at: words after the image belong to the command.
    """

    def make_parser(self, ctx: click.Context):
        base = super().make_parser(ctx)

        class Parser(type(base)):  # type: ignore[misc]
            def _match_long_opt(self, opt, explicit_value, state):
                if opt == "--explain" and explicit_value is None:
                    explicit_value = "text"
                return super()._match_long_opt(opt, explicit_value, state)

        base.__class__ = Parser
        return base


def explain_option(f):
    return click.option(
        "--explain", type=click.Choice(["text", "json"]), default=None, metavar="[=json]",
        help="Print each kernel-level step as it happens, with what it made (stderr); "
             "=json: one JSON object per step.")(f)


def start_explaining(mode: str | None) -> None:
    if mode:
        import sys

        from pyctr import explain

        explain.start(mode, sys.stderr)


def template(text: str, data: dict) -> str:
    """docker's --format, the common part of Go templates: {{.A.B}} and {{json .A}}."""
    import json
    import re

    from pyctr.errors import UserError

    def value(m: re.Match) -> str:
        as_json, path = m.group(1), m.group(2)
        cur = data
        for key in [k for k in path.split(".") if k]:
            if not isinstance(cur, dict) or key not in cur:
                raise UserError(f"template: {m.group(0)}: no field {key!r}",
                                hint="field names are those of pyctr inspect's JSON, e.g. "
                                     "{{.State.Pid}}")
            cur = cur[key]
        if as_json or isinstance(cur, (dict, list)):
            return json.dumps(cur)
        if isinstance(cur, bool):
            return "true" if cur else "false"
        return "<no value>" if cur is None else str(cur)

    return re.sub(r"\{\{\s*(json\s+)?(\.[\w.]*)\s*\}\}", value, text)
