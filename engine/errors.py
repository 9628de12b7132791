"""User-facing errors: one line, no traceback, and the exit status they end with."""

from __future__ import annotations

import errno
import os


class UserError(Exception):
    """A problem with the user's input or environment.

    The command line prints ``error: <message>`` and exits with status 2; the
    message must be a single line that says what is wrong and what to do.
    """


class RuntimeFailure(Exception):
    """A failure of the run rather than of its input (a full disk, a damaged
    state file): ``error: <message>`` and exit status 1, worth a retry once
    the cause is fixed."""


class DamagedState(RuntimeFailure):
    """A state file of a run or sweep (checkpoint, state.json, config.json,
    sweep.json, metrics.json, history.csv, a manifest) that cannot be read."""

    def __init__(self, path, what: str, todo: str = ""):
        self.path, self.what = path, what
        super().__init__(f"{path} is damaged ({what})" + (f"; {todo}" if todo else ""))


class LeftRunning(RuntimeFailure):
    """A run of a whole sweep ended with trials that other live runners hold,
    unfinished: the sweep is not done, though nothing failed here (exit
    status 3, so a script does not take it for a finished sweep)."""


class Terminated(BaseException):
    """SIGTERM (a scheduler preempting the task): unwinds like Ctrl-C, so the
    last checkpoint is left whole and locks are released."""


# OS errors that a rerun will not cure: the user has to pick another folder.
USER_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM}


def os_error_line(err: OSError, needs_mb: float | None = None) -> str:
    """``cannot write PATH: <reason> (needs about X MB)``: an OS error as one line."""
    path = err.filename or getattr(err, "path", None)
    reason = err.strerror or str(err)
    line = f"cannot write {path}: {reason}" if path else f"cannot write: {reason}"
    if err.errno == errno.ENOSPC:
        free = free_mb(path)
        extra = [f"needs about {needs_mb:,.0f} MB" if needs_mb else "", f"{free:,.0f} MB free" if free is not None
                 else ""]
        if any(extra):
            line += f" ({', '.join(e for e in extra if e)})"
    elif err.errno == errno.EMFILE:
        line += " (raise the limit with `ulimit -n 4096`)"
    elif err.errno in USER_ERRNOS:
        line += " (choose a writable folder)"
    return line


def free_mb(path) -> float | None:
    """Free space of the file system holding ``path`` (or its nearest existing parent)."""
    if not path:
        return None
    folder = os.path.abspath(str(path))
    while folder and not os.path.exists(folder):
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent
    try:
        stats = os.statvfs(folder)
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize / 2 ** 20


def exit_status(err: BaseException) -> int:
    """The exit status of an error the command line reports as one line."""
    if isinstance(err, UserError):
        return 2
    if isinstance(err, LeftRunning):
        return 3
    if isinstance(err, OSError):
        return 2 if err.errno in USER_ERRNOS else 1
    return 1


def one_line(err: BaseException) -> str:
    """The message of an error as the command line prints it (without ``error: ``)."""
    if isinstance(err, OSError):
        return os_error_line(err, getattr(err, "needs_mb", None))
    return " ".join(str(err).split())
