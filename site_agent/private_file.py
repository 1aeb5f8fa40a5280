"""Files the agent writes whole or not at all: readable by its user only, or by every user."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_private(path: Path, text: str, *, world_readable: bool = False) -> None:
    """Atomically (a temporary file, synced, renamed over it); readable by this user only unless
    `world_readable`, and writable by this user only either way."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755 if world_readable else 0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)   # mode 0600
    try:
        if world_readable:
            os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
