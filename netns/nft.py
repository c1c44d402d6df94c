"""Outbound masquerade in pyctr's own nftables table, and nothing else.

``ensure_masquerade`` adds ``ip saddr SUBNET oifname != BRIDGE masquerade``
to ``table ip pyctr`` only when the host already forwards (ip_forward=1):
pyctr reads that sysctl, never writes it.  Rules carry a comment naming the
network's bridge (``pyctr-net:BRIDGE``), unique per root and network: every
root has a network called ``bridge``, so a comment by network name would let
one root delete another's rule.  Removal finds rules by that comment (and
the older ``pyctr-net:NAME`` ones only when their oifname is this bridge);
the table goes when it is empty.
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
    return f"pyctr-net:{network.bridge}"


def _oifname(rule: dict) -> str | None:
    """The bridge of ``oifname != BRIDGE`` in a rule as ``nft -j`` shows it."""
    for expr in rule.get("expr", []):
        match = expr.get("match") if isinstance(expr, dict) else None
        if match and (match.get("left") or {}).get("meta", {}).get("key") == "oifname":
            right = match.get("right")
            return right if isinstance(right, str) else None
    return None


def _rules(table: str) -> list[dict]:
    try:
        out = _nft("-j", "list", "chain", "ip", table, CHAIN)
    except PyctrError:
        return []
    return [item["rule"] for item in json.loads(out).get("nftables", []) if item.get("rule")]


def masquerade_rules(table: str = TABLE) -> list[tuple[int, str]]:
    """(handle, comment) of the rules in our chain; [] when the table is absent."""
    return [(rule["handle"], rule.get("comment", "")) for rule in _rules(table)]


def _handles_of(network: Network, table: str) -> list[int]:
    """The network's rules: by its comment, or a pre-bridge-key rule on its own bridge."""
    legacy = f"pyctr-net:{network.name}"
    return [rule["handle"] for rule in _rules(table)
            if rule.get("comment") == _comment(network)
            or (rule.get("comment") == legacy and _oifname(rule) == network.bridge)]


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
    if not network.bridge:
        raise PyctrError(f"network {network.name} has no bridge name", step="masquerade")
    if _handles_of(network, table):
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
    if network.bridge:  # no bridge, no rule: ensure_masquerade never adds one
        for handle in _handles_of(network, table):
            _nft("delete", "rule", "ip", table, CHAIN, "handle", str(handle))
    if not masquerade_rules(table) and _table_exists(table):
        _nft("delete", "table", "ip", table)
