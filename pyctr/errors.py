"""One error type for all of pyctr, rendered the same everywhere.

Every failure a user can cause or meet carries what went wrong, where
(the init step, the syscall, the path), the errno, and a hint for a human.
The CLI prints ``render()`` and exits with ``exit_code``; ``--debug`` adds
the traceback.  This module imports nothing else of pyctr (DESIGN.md):
images/, netns/ and cgroups/ may all depend on it.
"""

from __future__ import annotations

import errno as _errno
import os

# docker's exit statuses for failures of the engine itself
EXIT_ENGINE = 125
EXIT_CANNOT_INVOKE = 126
EXIT_NOT_FOUND = 127


class PyctrError(Exception):
    """A failure with its context: step, syscall, path, errno and a hint.

    Messages are lowercase, without a final period, and name the offending
    value (the crun habit).
    """

    exit_code = EXIT_ENGINE

    def __init__(
        self,
        message: str,
        *,
        step: str | None = None,
        syscall: str | None = None,
        path: str | None = None,
        errno: int | None = None,
        hint: str | None = None,
        exit_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.step = step
        self.syscall = syscall
        self.path = path
        self.errno = errno
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def render(self) -> str:
        """``step: syscall path: message: ENAME (hint: …)`` with the parts that are known."""
        head = [p for p in (self.step, self.syscall) if p]
        text = ": ".join(head)
        if self.path and self.path not in self.message:
            text = f"{text} {self.path}" if text else self.path
        text = f"{text}: {self.message}" if text else self.message
        if self.errno is not None:
            name = _errno.errorcode.get(self.errno, str(self.errno))
            strerror = os.strerror(self.errno)
            if strerror.lower() in self.message.lower():
                text += f" ({name})"
            else:
                text += f": {name} ({strerror})"
        if self.hint:
            text += f" (hint: {self.hint})"
        return text

    def to_dict(self) -> dict:
        """Structured form, sent from a container's init to its parent."""
        return {
            "type": type(self).__name__,
            "message": self.message,
            "step": self.step,
            "syscall": self.syscall,
            "path": self.path,
            "errno": self.errno,
            "hint": self.hint,
            "exit_code": self.exit_code,
        }

    @classmethod
    def from_dict(cls, data: dict) -> PyctrError:
        kind = _KINDS.get(data.get("type", ""), PyctrError)
        return kind(
            data.get("message", "unknown error"),
            step=data.get("step"),
            syscall=data.get("syscall"),
            path=data.get("path"),
            errno=data.get("errno"),
            hint=data.get("hint"),
            exit_code=data.get("exit_code"),
        )

    def __str__(self) -> str:
        return self.render()


class UserError(PyctrError):
    """Bad input: a flag value, a reference, a file that is not what it says."""


class NotFound(PyctrError):
    """An image, container or file that does not exist."""


class Conflict(PyctrError):
    """A name in use, an image used by a container, a state that forbids the verb."""


class ImageError(PyctrError):
    """A malformed or unsafe image: bad digest, layer breakout, unknown media type."""


class RegistryError(PyctrError):
    """A registry refused, failed or could not be reached (pull, push, login)."""

    exit_code = 1  # as the docker CLI exits when its daemon reports a registry's error


class ContainerInitError(PyctrError):
    """A step of a container's init pipeline failed (reported over the sync socket)."""


class ExecError(PyctrError):
    """The container's command could not be executed (126 or 127)."""


_KINDS = {k.__name__: k for k in (PyctrError, UserError, NotFound, Conflict, ImageError,
                                  RegistryError, ContainerInitError, ExecError)}


def from_oserror(exc: OSError, *, step: str | None = None, syscall: str | None = None,
                 path: str | None = None, hint: str | None = None,
                 kind: type[PyctrError] = PyctrError) -> PyctrError:
    """Wrap an OSError, keeping its errno, syscall and path."""
    return kind(
        exc.strerror or str(exc),
        step=step,
        syscall=syscall or getattr(exc, "syscall", None),
        path=path or (exc.filename if isinstance(exc.filename, str) else None),
        errno=exc.errno,
        hint=hint,
    )
