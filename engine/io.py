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


# A lock's heartbeat (seconds between touches) and how long without one makes it stale.
HEARTBEAT_SECONDS = float(os.environ.get("ENGINE_LOCK_HEARTBEAT_SECONDS", 30))
STALE_SECONDS = float(os.environ.get("ENGINE_LOCK_STALE_SECONDS", 300))


class FolderLock:
    """A lock shared by processes on any machines that see one folder (NFS
    included): held while the folder ``path`` exists, created by ``mkdir``
    (atomic everywhere), kept alive by a thread touching ``path/heartbeat``.

    A lock whose heartbeat is older than ``stale`` seconds (its holder was
    killed, or its machine lost) is taken over by renaming it away (atomic:
    of two processes taking it over, one wins) and creating it anew.
    """

    def __init__(self, path: Path, stale: float | None = None, heartbeat: float | None = None):
        self.path = Path(path)
        self.stale = STALE_SECONDS if stale is None else stale
        self.heartbeat = HEARTBEAT_SECONDS if heartbeat is None else heartbeat
        self.taken_over: float | None = None  # seconds without heartbeat of a lock this one replaced
        self.token = f"{socket.gethostname()} pid {os.getpid()} {uuid.uuid4().hex}"
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

    def held_elsewhere(self) -> bool:
        """Whether a live process (heartbeat within ``stale``) holds the lock."""
        age = self.age()
        return age is not None and age < self.stale

    def acquire(self) -> bool:
        """Takes the lock; False when a live process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.path.mkdir()
        except FileExistsError:
            age = self.age()
            if age is None or age < self.stale:
                return False if age is not None else self.acquire()
            if not self._take_over():
                return False
        atomic_write(self.path / "owner", self.token + "\n")
        (self.path / "heartbeat").touch()
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, daemon=True, name=f"heartbeat {self.path}")
        self._thread.start()
        return True

    def _take_over(self) -> bool:
        """Replaces a stale lock by a fresh one of ours. Takers go one at a
        time, through a second folder (``.takeover``, made by ``mkdir``): the
        age read before it was taken may be of a lock another taker has
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
            age = self.age()
            if age is None or age < self.stale:
                return False
            away = self.path.with_name(f"{self.path.name}.stale-{uuid.uuid4().hex}")
            try:
                os.rename(self.path, away)
            except OSError:
                return False
            shutil.rmtree(away, ignore_errors=True)
            self.taken_over = age
            try:
                self.path.mkdir()
            except FileExistsError:  # a runner that found no lock at all came first
                return False
            return True
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
        try:
            mine = (self.path / "owner").read_text().strip() == self.token
        except OSError:
            mine = False
        if mine:
            shutil.rmtree(self.path, ignore_errors=True)
