"""The federation's audit head as this site last saw it, kept in a file the federation cannot write.

Each heartbeat acknowledgement carries the head (seq, hash) of the federation's audit log; the
agent keeps the latest here so that `fedctl audit verify --anchor FILE` can show that the log was
not truncated, emptied or rewritten and re-signed since. A head older than the one kept, or a
different hash at the same seq, is never written over the kept one: that is the evidence.
"""
from __future__ import annotations

import time
from pathlib import Path

from federation.audit import HASH_RE, Anchor, parse_anchor
from site_agent.private_file import write_private


def anchor_path(work_root: Path, site: str) -> Path:
    """Beside the site's agreement key, in the agent's work folder."""
    return work_root / f"{site}.audit-head.json"


def held(path: Path) -> Anchor | None:
    try:
        return parse_anchor(path.read_text())
    except (OSError, ValueError):
        return None


def keep(path: Path, seq: int, digest: str, source: str = "") -> str:
    """Save (seq, digest) as the head at `path` unless it would go back on the one kept: '' or,
    when it would, why it was not saved (for the agent to warn about)."""
    if seq < 1 or not HASH_RE.match(digest):
        return f"the federation sent an audit head that is not one (record {seq}, hash {digest[:64]!r}); not kept"
    current = held(path)
    if current is not None and (current.seq, current.hash) == (seq, digest):
        return ""
    if current is not None and (seq < current.seq or (seq == current.seq and digest != current.hash)):
        return (f"the federation's audit log head went from record {current.seq} ({current.hash[:12]}…) to {seq}"
                f" ({digest[:12]}…); kept the first in {path}: check the log with `fedctl audit verify --anchor`")
    write(path, Anchor(seq, digest, time.time(), source))
    return ""


def write(path: Path, anchor: Anchor) -> None:
    write_private(path, anchor.to_json())
