"""The site's lease, kept across agent restarts: an agent restarted while cut off from the
federation must still fence in time, so it starts from its last lease and when it was renewed,
not from a lease of zero (no lease: never fence)."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def lease_path(work_root: Path, site: str) -> Path:
    return work_root / f"{site}.lease.json"


def load(path: Path) -> tuple[float, float] | None:
    """(lease_s, renewed at, wall clock), or None when there is none to read."""
    try:
        data = json.loads(path.read_text())
        return float(data["lease_s"]), float(data["renewed_at"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save(path: Path, lease_s: float, renewed_at: float) -> None:
    """Atomically, readable by this user only."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)   # mode 0600
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"lease_s": lease_s, "renewed_at": renewed_at}, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
