"""Files every layer writes the same way: atomically, and under one cache folder.

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
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


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


def save_figure(fig, path: Path, dpi: int = 150) -> None:
    """A matplotlib figure as a PNG at ``path``, atomically; the figure is closed."""
    import matplotlib.pyplot as plt

    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi)
    plt.close(fig)
