"""Dockerfile instructions applied to an image config (`pyctr import --change`).

docker import takes the same ``--change 'CMD ["sh"]'`` strings; only the
instructions that describe the config (not the filesystem) are allowed.
"""

from __future__ import annotations

import json
import shlex

from pyctr.errors import UserError

ALLOWED = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "USER", "VOLUME", "WORKDIR",
           "STOPSIGNAL")


def _exec_form(value: str) -> list[str]:
    """JSON array form as is; the shell form runs under /bin/sh -c, as docker does."""
    value = value.strip()
    if value.startswith("["):
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if isinstance(parsed, list) and all(isinstance(a, str) for a in parsed):
            return parsed
    return ["/bin/sh", "-c", value]


def _pairs(instruction: str, value: str) -> dict[str, str]:
    words = shlex.split(value)
    if len(words) >= 2 and "=" not in words[0]:
        return {words[0]: value.split(None, 1)[1].strip()}  # legacy `ENV KEY value`
    out = {}
    for w in words:
        key, sep, val = w.partition("=")
        if not sep or not key:
            raise UserError(f'{instruction} needs KEY=VALUE pairs, got "{w}"')
        out[key] = val
    return out


def apply_changes(config: dict, changes: list[str]) -> dict:
    """Return a copy of an OCI image config's ``config`` section with the changes made."""
    cfg = json.loads(json.dumps(config))
    for change in changes:
        instruction, _, value = change.strip().partition(" ")
        instruction = instruction.upper()
        if instruction not in ALLOWED:
            raise UserError(f'{instruction or change!r} is not a valid change command',
                            hint="allowed: " + ", ".join(ALLOWED))
        if not value.strip():
            raise UserError(f"{instruction} requires at least one argument")
        if instruction in ("CMD", "ENTRYPOINT"):
            cfg["Cmd" if instruction == "CMD" else "Entrypoint"] = _exec_form(value)
        elif instruction == "ENV":
            env = dict(e.partition("=")[::2] for e in cfg.get("Env") or [])
            env.update(_pairs("ENV", value))
            cfg["Env"] = [f"{k}={v}" for k, v in env.items()]
        elif instruction == "LABEL":
            cfg.setdefault("Labels", {}).update(_pairs("LABEL", value))
        elif instruction == "EXPOSE":
            for port in value.split():
                cfg.setdefault("ExposedPorts", {})[port if "/" in port else f"{port}/tcp"] = {}
        elif instruction == "VOLUME":
            paths = _exec_form(value) if value.strip().startswith("[") else value.split()
            for path in paths:
                cfg.setdefault("Volumes", {})[path] = {}
        else:
            key = {"USER": "User", "WORKDIR": "WorkingDir", "STOPSIGNAL": "StopSignal"}
            cfg[key[instruction]] = value.strip()
    return cfg
