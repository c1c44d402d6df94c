"""Outbound masquerade in pyctr's own nftables table, and nothing else.

``ensure_masquerade`` adds ``ip saddr SUBNET oifname != BRIDGE masquerade``
to ``table ip pyctr`` only when the host already forwards (ip_forward=1):
pyctr reads that sysctl, never writes it.  Rules carry a comment naming the
network, so removal finds them by name; the table goes when it is empty.
Only ``nft`` on our own table: never a flush of the ruleset, never another
table.
"""

from __future__ import annotations

import json
import shutil
import subprocess

from pyctr.errors import PyctrError
from pyctr.netns.store import Network

TABLE = "pyctr"
CHAIN = "postrouting"


def host_forwards(path: str = "/proc/sys/net/ipv4/ip_forward") -> bool:
    try:
        with open(path) as f:
            return f.read().strip() == "1"
    except OSError:
        return False


def _nft(*args: str, input: str | None = None) -> str:
    exe = shutil.which("nft")
    if exe is None:
        raise PyctrError("nft not found", step="masquerade",
                         hint="install nftables (scripts/setup.sh does)")
    r = subprocess.run([exe, *args], input=input, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise PyctrError(f"nft {' '.join(args)}: {r.stderr.strip()}", step="masquerade")
    return r.stdout


def _comment(network: Network) -> str:
    return f"pyctr-net:{network.name}"


def masquerade_rules(table: str = TABLE) -> list[tuple[int, str]]:
    """(handle, comment) of the rules in our chain; [] when the table is absent."""
    try:
        out = _nft("-j", "list", "chain", "ip", table, CHAIN)
    except PyctrError:
        return []
    rules = []
    for item in json.loads(out).get("nftables", []):
        rule = item.get("rule")
        if rule:
            rules.append((rule["handle"], rule.get("comment", "")))
    return rules


def ensure_masquerade(network: Network, *, table: str = TABLE,
                      require_forwarding: bool = True) -> bool:
    """Add the network's masquerade rule if missing; False when the host does not forward.

    ``require_forwarding=False`` is for tests that only look at the rule.
    Callers serialise (the engine holds its lock), so check-then-add is safe.
    """
    if network.driver != "bridge":
        return False
    if require_forwarding and not host_forwards():
        return False
    if any(c == _comment(network) for _, c in masquerade_rules(table)):
        return True
    _nft("-f", "-", input=(
        f"add table ip {table}\n"
        f"add chain ip {table} {CHAIN} {{ type nat hook postrouting priority srcnat; }}\n"
        f"add rule ip {table} {CHAIN} ip saddr {network.subnet} "
        f'oifname != "{network.bridge}" masquerade comment "{_comment(network)}"\n'))
    return True


def _table_exists(table: str) -> bool:
    try:
        _nft("list", "table", "ip", table)
    except PyctrError:
        return False
    return True


def remove_masquerade(network: Network, *, table: str = TABLE) -> None:
    """Delete the network's rule; delete our table once no rule is left. Idempotent."""
    for handle, comment in masquerade_rules(table):
        if comment == _comment(network):
            _nft("delete", "rule", "ip", table, CHAIN, "handle", str(handle))
    if not masquerade_rules(table) and _table_exists(table):
        _nft("delete", "table", "ip", table)
