"""The site's lease, kept across agent restarts: an agent restarted while cut off from the
federation must still fence in time, so it starts from its last lease and when it was renewed,
not from a lease of zero (no lease: never fence)."""
from __future__ import annotations

import json
from pathlib import Path

from site_agent.private_file import write_private


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
    write_private(path, json.dumps({"lease_s": lease_s, "renewed_at": renewed_at}))
