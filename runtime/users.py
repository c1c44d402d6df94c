"""Resolve ``--user`` against the IMAGE's /etc/passwd and /etc/group, never the host's NSS.

``pwd.getpwnam`` would ask the host, whose user 1000 is someone else.  Docker
(and runc's libcontainer/user) parse the container's own files, read through
secure_join so that an image whose /etc/passwd is a symlink to the host's
absolute /etc/passwd reads its own (possibly missing) file instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pyctr.errors import UserError

from .securejoin import secure_join


@dataclass
class ResolvedUser:
    """The ids a container process runs with, and $HOME."""

    uid: int
    gid: int
    additional_gids: list[int] = field(default_factory=list)
    home: str = "/"


def _read_db(rootfs: Path, name: str) -> list[list[str]]:
    try:
        text = secure_join(rootfs, name).read_text(errors="replace")
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return []
    except OSError as exc:
        raise UserError(f"unable to read {name} in the image: {exc.strerror}", path=name,
                        errno=exc.errno, hint="check the image's file permissions") from None
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rows.append(line.split(":"))
    return rows


def _as_id(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def resolve_user(rootfs: Path, user: str) -> ResolvedUser:
    """Docker's forms: "", "name", "uid", "name:group", "uid:gid", "name:gid", "uid:group"."""
    name, _, group = user.partition(":")
    passwd = [r for r in _read_db(rootfs, "/etc/passwd") if len(r) >= 7]
    uid_num = _as_id(name) if name else 0
    entry = None
    for row in passwd:
        if (uid_num is None and row[0] == name) or (
                uid_num is not None and _as_id(row[2]) == uid_num):
            entry = row
            break
    if entry is None and uid_num is None:
        raise UserError(f"unable to find user {name}: no matching entries in passwd file",
                        hint="use a numeric uid or a user the image's /etc/passwd has")
    if entry is not None:
        uid = _as_id(entry[2]) or 0
        gid = _as_id(entry[3]) or 0
        home = entry[5] or "/"
        username = entry[0]
    else:
        uid, gid, home, username = uid_num or 0, 0, "/", None
    groups = [r for r in _read_db(rootfs, "/etc/group") if len(r) >= 3]
    if group:
        gid_num = _as_id(group)
        if gid_num is not None:
            gid = gid_num
        else:
            for row in groups:
                if row[0] == group:
                    gid = _as_id(row[2]) or 0
                    break
            else:
                raise UserError(
                    f"unable to find group {group}: no matching entries in group file",
                    hint="use a numeric gid or a group the image's /etc/group has")
    extra: list[int] = []
    if username is not None:
        for row in groups:
            members = row[3].split(",") if len(row) > 3 else []
            g = _as_id(row[2])
            if username in members and g is not None and g != gid and g not in extra:
                extra.append(g)
    return ResolvedUser(uid=uid, gid=gid, additional_gids=extra, home=home)
