"""The site's lease, kept on disk: an agent restarted while cut off from the federation must still
fence in time, so it starts from its last lease and when it was renewed, not from a lease of zero
(no lease: never fence); and each attempt's guard (`site_agent.guard`) reads it to stop its job
when the agent itself is gone. Every user may read it, since the guards run as the tenants' users;
only the agent may write it or its folder."""
from __future__ import annotations

import json
from pathlib import Path

from site_agent.private_file import write_private

FENCE_AT = 2 / 3        # of the lease without an acknowledged heartbeat: stop this site's work
FOLDER = ".fedctl-lease"


def lease_path(work_dir: Path, site: str) -> Path:
    return work_dir / FOLDER / f"{site}.json"


def load(path: Path) -> tuple[float, float] | None:
    """(lease_s, renewed at, wall clock), or None when there is none to read."""
    try:
        data = json.loads(path.read_text())
        return float(data["lease_s"]), float(data["renewed_at"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save(path: Path, lease_s: float, renewed_at: float) -> None:
    write_private(path, json.dumps({"lease_s": lease_s, "renewed_at": renewed_at}), world_readable=True)
