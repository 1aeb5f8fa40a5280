"""An attempt's guard: it stops its job when the site's agent has been silent too long.

An agent fences its site's work when its lease runs out, before the federation may re-place that
work elsewhere. An agent that is dead cannot: its jobs would run on while their next attempts
start at another site. So each attempt runs behind this guard (`wrap`; run by Ray as
`python -m site_agent.guard`), which starts the job's own entrypoint (FEDCTL_GUARDED) and reads
the lease file the agent keeps (FEDCTL_LEASE_FILE), believing it only when it and its folder are
the agent's (FEDCTL_LEASE_OWNER) alone to write. Once the lease was last renewed more than five
sixths of it ago (by the host's boot clock, which no wall-clock step moves), it stops every process
of its process group but itself and the shell above it (SIGTERM, then SIGKILL after a grace)
and exits with FENCED_EXIT and a `fenced:` line. The job stays in the guard's group, Ray's, so
whatever stops the group stops the job. Without a lease it may believe, it says so in the job's log and only waits.

Standard library only: it runs once per attempt, as the tenant's user."""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from site_agent.lease_file import Lease, load, now_boot

# Later than the agent's own fence (two thirds): a live agent fences, or learns from a witness
# that the federation is down and renews, before its guards would; earlier than the federation.
GUARD_AT = 5 / 6
FENCED_EXIT = 87
FENCED = "fenced:"
CHECK_S = 0.25
ENTRYPOINT = f"{shlex.quote(sys.executable)} -m site_agent.guard"   # what Ray runs for a guarded attempt
ENV = ("FEDCTL_GUARDED", "FEDCTL_LEASE_FILE", "FEDCTL_LEASE_OWNER")  # the site's alone: no spec may set them


def wrap(entrypoint: str, lease: Path) -> tuple[str, dict[str, str]]:
    """The entrypoint Ray runs instead, and the environment it needs."""
    return ENTRYPOINT, {ENV[0]: entrypoint, **lease_env(lease)}


def lease_env(lease: Path) -> dict[str, str]:
    """Where a guard finds the agent's lease, and whose alone it must be to be believed."""
    return {ENV[1]: str(lease), ENV[2]: str(os.geteuid())}


def lapsed(lease: Lease | None, now: float) -> str:
    """Why the job must stop now (`now` by the boot clock), or '' while the lease holds (or there is none)."""
    if lease is None or not lease.lease_s:
        return ""
    silent = now - lease.renewed_boot
    if silent <= lease.lease_s * GUARD_AT:
        return ""
    return f"the site's agent renewed no lease for {silent:.1f}s of a {lease.lease_s:g}s lease; stopping this attempt"


def due(lease: Path, owner: int) -> tuple[str, float] | None:
    """When the job must stop now: why, and the grace it gets (a twelfth of the lease, within 0.5-5 s)."""
    kept = load(lease, owner)
    why = lapsed(kept, now_boot())
    return (why, min(5.0, max(0.5, kept.lease_s / 12))) if why and kept is not None else None


def others() -> list[int]:
    """The live processes of this process group but this one and those it runs under (the shell
    Ray starts the entrypoint with, which must see this guard's own exit code)."""
    me, group = os.getpid(), os.getpgrp()
    members: dict[int, int] = {}   # pid -> parent
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                state, ppid, pgrp = f.read().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        if int(pgrp) == group and state != "Z":
            members[int(name)] = int(ppid)
    above, pid = set(), me
    while pid in members:
        above.add(pid)
        pid = members[pid]
    return [pid for pid in members if pid not in above]


def stop_group(child: subprocess.Popen, grace_s: float) -> None:
    """Every other process of the group: asked once, and after `grace_s` made."""
    _signal(others(), signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while others() and time.monotonic() < deadline:
        child.poll()
        time.sleep(0.05)
    for _ in range(50):   # a process may fork while it is killed: until none is left
        rest = others()
        if not rest:
            return
        _signal(rest, signal.SIGKILL)
        child.poll()
        time.sleep(0.02)


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def main() -> int:
    lease, owner = Path(os.environ["FEDCTL_LEASE_FILE"]), int(os.environ["FEDCTL_LEASE_OWNER"])
    if load(lease, owner) is None:   # a Ray node apart from the agent's, say: say so where the operator will look
        print(f"fedctl guard: no lease of the agent's to read at {lease}: this attempt runs on if the agent dies",
              file=sys.stderr, flush=True)
    child = subprocess.Popen(os.environ["FEDCTL_GUARDED"], shell=True)
    while True:
        try:
            code = child.wait(timeout=CHECK_S)
            return code if code >= 0 else 128 - code
        except subprocess.TimeoutExpired:
            pass
        fence = due(lease, owner)
        if fence is not None:
            print(f"{FENCED} {fence[0]}", file=sys.stderr, flush=True)
            stop_group(child, fence[1])
            return FENCED_EXIT


if __name__ == "__main__":
    sys.exit(main())
