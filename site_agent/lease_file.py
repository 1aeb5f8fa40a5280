"""The site's lease, kept on disk: an agent restarted while cut off from the federation must still
fence in time, so it starts from its last lease and when it was renewed, not from a lease of zero
(no lease: never fence); and each attempt's guard (`site_agent.guard`) reads it to stop its job
when the agent itself is gone. Every user may read it, since the guards run as the tenants' users;
only the agent may write it or its folder, and a guard believes it only when both are the agent's."""
from __future__ import annotations

import json
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from site_agent.private_file import write_private

FENCE_AT = 2 / 3        # of the lease without an acknowledged heartbeat: stop this site's work
FOLDER = ".fedctl-lease"


@dataclass(frozen=True)
class Lease:
    lease_s: float
    renewed_at: float     # wall clock, for an agent restarted (perhaps after a reboot)
    renewed_boot: float   # CLOCK_BOOTTIME, for the guards on this host: no wall-clock step moves it


def lease_path(work_dir: Path, site: str) -> Path:
    return work_dir / FOLDER / f"{site}.json"


def prepare(path: Path) -> None:
    """The lease's folder, the agent's own and readable by every user; PermissionError when another
    user made it first (it could plant a lease that stops every job here, or keeps them running)."""
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    st = folder.stat()
    if st.st_uid != os.geteuid():
        raise PermissionError(f"{folder} belongs to uid {st.st_uid}, not to this agent (uid {os.geteuid()})")
    if stat.S_IMODE(st.st_mode) != 0o755:
        os.chmod(folder, 0o755)   # whatever the umask made of it


def load(path: Path, owner: int | None = None) -> Lease | None:
    """The lease, or None when there is none to read or (with `owner`) it or its folder is not
    `owner`'s alone to write."""
    try:
        if owner is not None and not all(_owned(p.stat(), owner) for p in (path.parent, path)):
            return None
        data = json.loads(path.read_text())
        return Lease(float(data["lease_s"]), float(data["renewed_at"]), float(data["renewed_boot"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save(path: Path, lease: Lease) -> None:
    write_private(path, json.dumps({"lease_s": lease.lease_s, "renewed_at": lease.renewed_at,
                                    "renewed_boot": lease.renewed_boot}), world_readable=True)


def now_boot() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def _owned(st: os.stat_result, owner: int) -> bool:
    return st.st_uid == owner and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
