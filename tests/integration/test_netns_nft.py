"""Masquerade rules are keyed by bridge: two roots' networks named alike keep their own rules.

Every pyctr root has a network called ``bridge``, so the rule's comment names
the network's bridge (unique per root and network), never the network's name.
Each test works in an nft table of its own, deleted at the end; no bridge is
needed (a rule names its oifname, which need not exist).
"""

from __future__ import annotations

import secrets
import shutil
import subprocess

import pytest

from pyctr.netns import nft
from pyctr.netns.store import Network

pytestmark = [pytest.mark.root(reason="nftables rules"),
              pytest.mark.skipif(shutil.which("nft") is None,
                                 reason="needs nftables (scripts/setup.sh)")]


@pytest.fixture
def table():
    name = f"pyctr_t{secrets.token_hex(3)}"
    yield name
    # ours alone, whatever the test left: never another table
    subprocess.run(["nft", "delete", "table", "ip", name], capture_output=True, check=False)


def _two_roots() -> tuple[Network, Network]:
    tag = secrets.token_hex(3)
    return (Network(name="bridge", id="a" * 64, bridge=f"pyctra{tag}", subnet="10.203.1.0/24"),
            Network(name="bridge", id="b" * 64, bridge=f"pyctrb{tag}", subnet="10.203.2.0/24"))


def test_same_network_name_in_two_roots_keeps_two_rules_and_removes_only_its_own(table):
    one, two = _two_roots()
    assert nft.ensure_masquerade(one, table=table, require_forwarding=False) is True
    assert nft.ensure_masquerade(two, table=table, require_forwarding=False) is True
    assert sorted(c for _, c in nft.masquerade_rules(table)) == sorted(
        [f"pyctr-net:{one.bridge}", f"pyctr-net:{two.bridge}"])

    nft.remove_masquerade(one, table=table)
    nft.remove_masquerade(one, table=table)  # idempotent
    assert [c for _, c in nft.masquerade_rules(table)] == [f"pyctr-net:{two.bridge}"]
    shown = subprocess.run(["nft", "list", "table", "ip", table], capture_output=True,
                           text=True, check=True).stdout
    assert f'ip saddr {two.subnet} oifname != "{two.bridge}" masquerade' in shown
    assert one.subnet not in shown

    nft.remove_masquerade(two, table=table)
    assert nft.masquerade_rules(table) == []
    assert subprocess.run(["nft", "list", "table", "ip", table],
                          capture_output=True, check=False).returncode != 0  # table gone


def test_rule_by_network_name_from_before_is_removed_only_for_its_own_bridge(table):
    one, two = _two_roots()
    for net in (one, two):  # as pyctr wrote them before: comment by network name
        subprocess.run(["nft", "-f", "-"], text=True, check=True, input=(
            f"add table ip {table}\n"
            f"add chain ip {table} {nft.CHAIN} {{ type nat hook postrouting priority srcnat; }}\n"
            f"add rule ip {table} {nft.CHAIN} ip saddr {net.subnet} "
            f'oifname != "{net.bridge}" masquerade comment "pyctr-net:{net.name}"\n'))
    assert nft.ensure_masquerade(one, table=table, require_forwarding=False) is True
    assert len(nft.masquerade_rules(table)) == 2  # the old rule counts: no duplicate

    nft.remove_masquerade(one, table=table)
    shown = subprocess.run(["nft", "list", "table", "ip", table], capture_output=True,
                           text=True, check=True).stdout
    assert two.bridge in shown and one.bridge not in shown
    nft.remove_masquerade(two, table=table)
    assert nft.masquerade_rules(table) == []
