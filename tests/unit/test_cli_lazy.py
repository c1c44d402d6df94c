"""The CLI loads a verb's module on first use; the table it uses must match the modules."""

from __future__ import annotations

import importlib
import subprocess
import sys

from pyctr.cli.main import VERBS


def test_the_verb_table_matches_each_modules_commands():
    defined = {}
    for module in sorted(set(VERBS.values())):
        for command in importlib.import_module(f"pyctr.cli.{module}").COMMANDS:
            defined[command.name] = module
    assert defined == VERBS


def test_help_lists_every_verb_and_run_loads_one_module():
    code = ("import sys; from click.testing import CliRunner; from pyctr.cli.main import cli;"
            "r = CliRunner().invoke(cli, ['--help']); print(r.output);"
            "print(sorted(m for m in sys.modules if m.startswith('pyctr.cli.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    for verb in VERBS:
        assert f"\n  {verb} " in out, verb
    code = ("import sys; from pyctr.cli.main import cli;"
            "cli.get_command(None, 'run');"
            "print(sorted(m for m in sys.modules if m.startswith('pyctr.cli.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "pyctr.cli.container" in out
    assert "pyctr.cli.image" not in out and "pyctr.cli.network" not in out
