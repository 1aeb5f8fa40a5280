"""An attempt's guard: it stops its job when the site's agent has been silent too long.

An agent fences its site's work when its lease runs out, before the federation may re-place that
work elsewhere. An agent that is dead cannot: its jobs would run on while their next attempts
start at another site. So each attempt runs behind this guard (`wrap`; run by Ray as
`python -m site_agent.guard`), which starts the job's own entrypoint (FEDCTL_GUARDED) in a process
group of its own and reads the lease file the agent keeps (FEDCTL_LEASE_FILE). Once the lease was
last renewed more than five sixths of it ago, it stops the group
(SIGTERM, then SIGKILL) and exits with FENCED_EXIT and a `fenced:` line, which the agent reports as
a lost attempt. Without a lease file (no lease yet, or one this host cannot read) it only waits.

Standard library only: it runs once per attempt, as the tenant's user."""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from site_agent.lease_file import load

# Later than the agent's own fence (two thirds): a live agent fences, or learns from a witness
# that the federation is down and renews, before its guards would; earlier than the federation.
GUARD_AT = 5 / 6
FENCED_EXIT = 87
FENCED = "fenced:"
CHECK_S = 0.25


def wrap(entrypoint: str, lease: Path) -> tuple[str, dict[str, str]]:
    """The entrypoint Ray runs instead, and the environment it needs."""
    return (f"{shlex.quote(sys.executable)} -m site_agent.guard",
            {"FEDCTL_GUARDED": entrypoint, "FEDCTL_LEASE_FILE": str(lease)})


def lapsed(kept: tuple[float, float] | None, now: float) -> str:
    """Why the job must stop now, or '' while the lease holds (or there is none)."""
    if kept is None or not kept[0]:
        return ""
    lease_s, renewed_at = kept
    silent = now - renewed_at
    if silent <= lease_s * GUARD_AT:
        return ""
    return f"the site's agent renewed no lease for {silent:.1f}s of a {lease_s:g}s lease; stopping this attempt"


def stop(child: subprocess.Popen, grace_s: float) -> None:
    """The job's whole process group: asked, then made."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(child.pid, sig)
        except ProcessLookupError:
            return
        try:
            child.wait(timeout=grace_s)
            if sig == signal.SIGTERM:
                os.killpg(child.pid, signal.SIGKILL)   # what it left behind in its group
            return
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            return


def main() -> int:
    lease = Path(os.environ["FEDCTL_LEASE_FILE"])
    if load(lease) is None:   # a Ray node apart from the agent's, say: say so where the operator will look
        print(f"fedctl guard: cannot read the site's lease at {lease}: this attempt runs on if the agent dies",
              file=sys.stderr, flush=True)
    child = subprocess.Popen(os.environ["FEDCTL_GUARDED"], shell=True, process_group=0)
    while True:
        try:
            code = child.wait(timeout=CHECK_S)
            return code if code >= 0 else 128 - code
        except subprocess.TimeoutExpired:
            pass
        kept = load(lease)
        why = lapsed(kept, time.time())
        if why and kept is not None:
            print(f"{FENCED} {why}", file=sys.stderr, flush=True)
            stop(child, min(5.0, max(0.5, kept[0] / 12)))
            return FENCED_EXIT


if __name__ == "__main__":
    sys.exit(main())
