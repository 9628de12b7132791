"""Files every layer writes the same way: atomically, under one cache folder,
and behind a lock when several processes may want the same work.

A file the engine writes is first written beside its target under a name no
other process uses, then renamed over it (``os.replace`` is atomic on one
file system, NFS included): a reader, a killed run or a second shard writing
the same file at the same moment sees the old content or the new one, never
a mix.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from engine.errors import DamagedState


def cache_dir() -> Path:
    """``$ENGINE_CACHE_DIR``, else ``$XDG_CACHE_HOME/engine``, else ``~/.cache/engine``."""
    if os.environ.get("ENGINE_CACHE_DIR"):
        return Path(os.environ["ENGINE_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "engine"


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "w", *, durable: bool = False, **kwargs) -> Iterator[IO[Any]]:
    """A file object whose content replaces ``path`` when the block ends without
    an error (and is discarded otherwise).

    ``durable`` also flushes it to the disk before the rename (a checkpoint
    must survive a power cut; a report can be written again).
    """
    path = Path(path)
    # Process and thread in the name: two shards or threads never share a temporary file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        with open(tmp, mode, **kwargs) as f:
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: Path, data: str | bytes) -> None:
    """Replaces ``path`` with ``data`` (text as UTF-8), atomically."""
    with atomic_open(path, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def atomic_json(path: Path, value: Any, indent: int | None = 1, default=float) -> None:
    """Replaces ``path`` with ``value`` as JSON; ``default`` converts what JSON
    cannot hold (numpy scalars, by default, as floats)."""
    atomic_write(path, json.dumps(value, indent=indent, default=default) + "\n")


@contextlib.contextmanager
def needing(mb: float) -> Iterator[None]:
    """Tags an OS error raised inside the block with the space the write
    needed (``needs_mb``), so that its one line can say it."""
    try:
        yield
    except OSError as err:
        if getattr(err, "needs_mb", None) is None:
            err.needs_mb = mb
        raise


# Names of the files an interrupted atomic write leaves behind: ``atomic_open``'s
# and ``create_once``'s temporaries and the ``.keras`` ones of ``save_model``.
TEMP_PATTERNS = (".*.tmp", ".*.new", "*.tmp.keras", ".*.copy.keras")


def remove_temp_files(*folders: Path) -> list[Path]:
    """Removes what interrupted writes left in ``folders`` (not recursive):
    nothing else writes there while the caller holds the folder."""
    removed = []
    for folder in folders:
        for pattern in TEMP_PATTERNS:
            for path in Path(folder).glob(pattern):
                if path.is_file():
                    path.unlink(missing_ok=True)
                    removed.append(path)
    return removed


def read_json(path: Path, todo: str = "", kind: type = dict) -> Any:
    """A state file's JSON, validated: a file that is empty, cut short or not
    a JSON ``kind`` raises ``DamagedState`` naming it and ``todo``."""
    path = Path(path)
    try:
        value = json.loads(path.read_text())
    except UnicodeDecodeError:
        raise DamagedState(path, "not text", todo) from None
    except json.JSONDecodeError as err:
        what = "empty" if not path.stat().st_size else f"not valid JSON: {err.msg} at byte {err.pos}"
        raise DamagedState(path, what, todo) from None
    if not isinstance(value, kind):
        raise DamagedState(path, f"a JSON {type(value).__name__}, not a {kind.__name__}", todo)
    return value


def move_aside(path: Path) -> Path:
    """Renames a damaged file or folder to ``NAME.damaged`` (``.damaged-2``, ...
    when taken) so that nothing reads it again and nothing is lost."""
    path = Path(path)
    target, n = path.with_name(path.name + ".damaged"), 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.damaged-{n}")
    os.replace(path, target)
    return target


def create_once(path: Path, data: str) -> bool:
    """Writes ``path`` only if it does not exist yet, atomically; False when it
    did. (A hard link fails on an existing name: atomic on NFS too, where an
    exclusive open is not everywhere.)"""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.new")
    tmp.write_text(data)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def save_figure(fig, path: Path, dpi: int = 150) -> None:
    """A matplotlib figure as a PNG at ``path``, atomically; the figure is closed."""
    import matplotlib.pyplot as plt

    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi)
    plt.close(fig)


# A lock's heartbeat (seconds between touches) and how long without one makes
# it stale: read when a lock is made, so a test or a job script can set them.
def heartbeat_seconds() -> float:
    return float(os.environ.get("ENGINE_LOCK_HEARTBEAT_SECONDS", 30))


def stale_seconds() -> float:
    return float(os.environ.get("ENGINE_LOCK_STALE_SECONDS", 300))


def _read_text(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, field 22 of
    /proc/PID/stat); None where there is no /proc. With the boot id it tells
    a holder from a later process that reuses its pid."""
    stat = _read_text(f"/proc/{pid}/stat")
    if stat is None:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ")".
    fields = stat[stat.rfind(")") + 2:].split()
    return fields[19] if len(fields) > 19 else None


def this_holder() -> dict:
    """Who this process is, as a lock's ``owner`` file records it: the host
    (its name, its boot id and its pid namespace, so that two containers that
    share a host name are not taken for one), the pid and its start time."""
    return {"host": socket.gethostname(), "boot": _read_text("/proc/sys/kernel/random/boot_id"),
            "pidns": _link("/proc/self/ns/pid"), "pid": os.getpid(), "start": _process_start(os.getpid())}


def _link(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def holder_alive(owner: dict) -> bool | None:
    """Whether the process an ``owner`` record names still runs: True or
    False when it ran on this host (same name, boot and pid namespace), None
    when it did not (another host cannot see its pid: its heartbeat tells)."""
    here = this_holder()
    if any(owner.get(k) != here[k] for k in ("host", "boot", "pidns")) or not isinstance(owner.get("pid"), int):
        return None
    pid = owner["pid"]
    if pid == here["pid"]:
        return True  # this very process (another thread's lock)
    stat = _read_text(f"/proc/{pid}/stat")
    if stat is not None:
        state = stat[stat.rfind(")") + 2:].split()[:1]
        # A zombie has exited (its parent has not reaped it yet); a process
        # started later under the same pid is not the holder.
        return state != ["Z"] and (owner.get("start") is None or _process_start(pid) == owner["start"])
    if here["start"] is not None:  # /proc works here: no entry means no such process
        return False
    try:  # no /proc (macOS): signal 0 asks whether the pid exists
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class FolderLock:
    """A lock shared by processes on any machines that see one folder (NFS
    included): held while the folder ``path`` exists, kept alive by a thread
    touching ``path/heartbeat``; ``path/owner`` names the holder.

    The folder is made whole beside ``path`` (owner and heartbeat written)
    and renamed into place: a rename onto a folder that holds files fails,
    so of two takers one wins (atomic everywhere, NFS included), and a lock
    never exists without its owner.

    A lock is stale when its holder ran on this host and has exited (known at
    once from its pid and start time), or when its heartbeat is older than
    ``stale`` seconds (a holder on another host killed or lost, or one frozen
    here). A stale lock is taken over by renaming it away and putting a new
    one in its place.
    """

    def __init__(self, path: Path, stale: float | None = None, heartbeat: float | None = None):
        self.path = Path(path)
        self.stale = stale_seconds() if stale is None else stale
        self.heartbeat = heartbeat_seconds() if heartbeat is None else heartbeat
        self.taken_over: str | None = None  # why the lock this one replaced was stale
        self.owner = this_holder() | {"token": uuid.uuid4().hex}
        self.token = self.owner["token"]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def age(self) -> float | None:
        """Seconds since the holder's last heartbeat; None when nobody holds the lock."""
        for beat in (self.path / "heartbeat", self.path):
            try:
                return max(0.0, time.time() - beat.stat().st_mtime)
            except FileNotFoundError:
                continue
        return None

    def holder(self) -> dict:
        """The holder's record (empty when unreadable: a lock of an older engine)."""
        try:
            owner = json.loads((self.path / "owner").read_text())
        except (OSError, ValueError):
            return {}
        return owner if isinstance(owner, dict) else {}

    def state(self) -> tuple[str, str]:
        """("free" | "held" | "stale", a phrase saying why): held by a live
        holder, or stale with the reason it may be taken over."""
        age = self.age()
        if age is None:
            return "free", "nobody holds it"
        owner = self.holder()
        who = f"pid {owner['pid']} on {owner['host']}" if "pid" in owner and "host" in owner else "its runner"
        alive = holder_alive(owner)
        if alive is False:
            return "stale", f"{who} has exited"
        if age >= self.stale:
            return "stale", f"{who} sent no heartbeat for {age:.0f} s"
        left = self.stale - age
        return "held", f"{who}, heartbeat {age:.0f} s ago" + (
            "" if alive else f"; stale in {left:.0f} s if it stops")

    def held_elsewhere(self) -> bool:
        """Whether a live process holds the lock (see ``state``)."""
        return self.state()[0] == "held"

    def acquire(self) -> bool:
        """Takes the lock; False when a live process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._place():
            return self._started()
        state, why = self.state()
        if state == "free":  # released between the two looks
            return self.acquire()
        if state == "held" or not self._take_over():
            return False
        self.taken_over = why
        return self._started()

    def wait(self, timeout: float, poll: float = 0.02) -> None:
        """Takes the lock, retrying every ``poll`` seconds while a live process
        holds it; raises ``TimeoutError`` naming the holder after ``timeout``
        seconds. For short critical sections only (a read-change-write of one
        file): a long one says who holds it instead of waiting."""
        deadline = time.monotonic() + timeout
        while not self.acquire():
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.path} is still held after {timeout:g} s ({self.state()[1]})")
            time.sleep(poll)

    def _place(self, new: Path | None = None) -> bool:
        """Renames a whole new lock folder (``new``, else one made now) into
        place; False when a lock is there."""
        new = new or self._made()
        try:
            os.rename(new, self.path)
            return True
        except OSError as err:  # ENOTEMPTY or EEXIST: a lock is there
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST) and not self.path.exists():
                raise
            return False
        finally:
            shutil.rmtree(new, ignore_errors=True)

    def _made(self) -> Path:
        """A lock folder of this holder beside ``path``, owner and heartbeat written."""
        new = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.new")
        new.mkdir()
        atomic_write(new / "owner", json.dumps(self.owner) + "\n")
        (new / "heartbeat").touch()
        return new

    def _started(self) -> bool:
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, daemon=True, name=f"heartbeat {self.path}")
        self._thread.start()
        return True

    def _take_over(self) -> bool:
        """Replaces a stale lock by a fresh one of ours. Takers go one at a
        time, through a second folder (``.takeover``, made by ``mkdir``): the
        state read before it was taken may be of a lock another taker has
        replaced since, so it is read again inside."""
        guard = self.path.with_name(f"{self.path.name}.takeover")
        try:
            guard.mkdir()
        except FileExistsError:
            try:  # a taker that died inside leaves it: gone after ``stale``
                if time.time() - guard.stat().st_mtime > self.stale:
                    guard.rmdir()
            except OSError:
                pass
            return False
        try:
            if self.state()[0] != "stale":
                return False
            new = self._made()  # before the stale lock goes: the lock is missing for the least time
            away = self.path.with_name(f"{self.path.name}.stale-{uuid.uuid4().hex}")
            try:
                os.rename(self.path, away)
            except OSError:
                shutil.rmtree(new, ignore_errors=True)
                return False
            placed = self._place(new)  # False: a runner that found no lock at all came first
            shutil.rmtree(away, ignore_errors=True)
            return placed
        finally:
            try:
                guard.rmdir()
            except OSError:
                pass

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            try:
                os.utime(self.path / "heartbeat")
            except OSError:  # the lock was taken over or removed: nothing left to keep alive
                return

    def release(self) -> None:
        """Gives the lock up (only if this process still holds it: a lock taken
        over while this one stalled belongs to the process that took it)."""
        self._stop.set()
        if self._thread is None:
            return
        self._thread.join()
        self._thread = None
        if self.holder().get("token") == self.token:
            # Renamed away first: the folder is gone at once, not emptied file by file.
            away = self.path.with_name(f"{self.path.name}.released-{uuid.uuid4().hex}")
            try:
                os.rename(self.path, away)
            except OSError:
                return
            shutil.rmtree(away, ignore_errors=True)


@contextlib.contextmanager
def locked(path: Path, timeout: float, *, stale: float | None = None,
           heartbeat: float | None = None) -> Iterator[FolderLock]:
    """Holds the ``FolderLock`` at ``path`` for the block, waiting up to
    ``timeout`` seconds for it (``FolderLock.wait``); released however the
    block ends."""
    lock = FolderLock(path, stale=stale, heartbeat=heartbeat)
    lock.wait(timeout)
    try:
        yield lock
    finally:
        lock.release()
