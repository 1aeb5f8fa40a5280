"""An attempt's files on this site: its input folder (fetched and checked), its output folder, the
pairwise secrets of secure aggregation, and this site's agreement key. Nothing here leaves the site
but what an attempt left in its output folder."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from federation.errors import FederationError
from federation.jobs import AttemptState
from federation.spec import SiteConfig
from federation.v1 import federation_pb2 as pb
from site_agent.plan import SiteWord
from training import secagg

log = logging.getLogger("site_agent")

MAX_OUTPUTS = 16
MAX_OUTPUT_BYTES = 4 << 20   # the federation's limit per file

Fetch = Callable[[str, int, str], bytes]   # (job, attempt, name) -> data, from the federation


@dataclass(frozen=True)
class AttemptFiles:
    root: Path    # where attempts find their inputs and leave their outputs, one folder each
    site: str

    @classmethod
    def of(cls, config: SiteConfig) -> AttemptFiles:
        base = config.spec.work_dir or Path(tempfile.gettempdir())
        return cls(base / ".fedctl-io" / config.metadata.name, config.metadata.name)

    def prepare(self, sid: str, a: pb.Assignment, fetch: Fetch | None) -> dict[str, str] | SiteWord | None:
        """Fetch the attempt's inputs into its input folder and make its output folder; their
        paths for the job, or the site's word when it refuses an input, or None when an input
        could not be fetched (the next pass tries again)."""
        inbox, outbox = self.root / sid / "in", self.root / sid / "out"
        outbox.mkdir(parents=True, exist_ok=True, mode=0o700)
        inbox.mkdir(exist_ok=True, mode=0o700)
        for ref in a.inputs:
            if Path(ref.name).name != ref.name or ref.name.startswith("."):
                return SiteWord(AttemptState.REJECTED, f"invalid input name {ref.name[:64]!r}")
            if not self._fetched(inbox / ref.name, ref, a, fetch):
                return None
        if any(ref.name == "peers.json" for ref in a.inputs):
            try:
                self._secrets(inbox)
            except (ValueError, KeyError, TypeError) as e:
                return SiteWord(AttemptState.REJECTED, f"invalid peers.json: {e}")
        return {"FEDCTL_INPUT_DIR": str(inbox), "FEDCTL_OUTPUT_DIR": str(outbox)}

    def _fetched(self, path: Path, ref: pb.ArtifactRef, a: pb.Assignment, fetch: Fetch | None) -> bool:
        """Whether `path` holds the input `ref` names, fetching it when it does not yet."""
        if path.exists() and hashlib.sha256(path.read_bytes()).hexdigest() == ref.sha256:
            return True
        if fetch is None:
            return False
        try:
            data = fetch(a.job_id, a.attempt, ref.name)
        except FederationError as e:
            log.warning("fetching %s of %s: %s", ref.name, a.submission_id, e.message)
            return False
        if hashlib.sha256(data).hexdigest() != ref.sha256:
            log.warning("fetching %s of %s: content does not match its digest", ref.name, a.submission_id)
            return False
        path.write_bytes(data)
        return True

    def agreement_key(self) -> secagg.KeyPair:
        """This site's X25519 key for secure aggregation, made here once and never sent."""
        return secagg.KeyPair.load_or_create(self.root.parent / f"{self.site}.x25519")

    def _secrets(self, inbox: Path) -> None:
        """From peers.json (the round's context and each peer's public key), write this site's
        pairwise secrets for the job beside it: they never leave the site."""
        peers = json.loads((inbox / "peers.json").read_text())
        key = self.agreement_key()
        secrets_ = {peer: secagg.pair_secret(key, self.site, peer, bytes.fromhex(public), peers["context"]).hex()
                    for peer, public in peers["keys"].items() if peer != self.site}
        fd = os.open(inbox / "secrets.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(secrets_, f)

    def outputs(self, sid: str) -> list[tuple[str, bytes]]:
        """The files an attempt left in its output folder, at most MAX_OUTPUTS of MAX_OUTPUT_BYTES."""
        outbox = self.root / sid / "out"
        files = sorted(p for p in outbox.iterdir() if p.is_file() and not p.is_symlink()) if outbox.is_dir() else []
        out = []
        for p in files[:MAX_OUTPUTS]:
            if p.stat().st_size > MAX_OUTPUT_BYTES:
                log.warning("%s: output %s is over %d bytes; not sent", sid, p.name, MAX_OUTPUT_BYTES)
                continue
            out.append((p.name, p.read_bytes()))
        return out

    def forget(self, keep: Callable[[str], bool]) -> None:
        """Remove the folders of the attempts `keep` lets go."""
        if not self.root.is_dir():
            return
        for folder in self.root.iterdir():
            if not keep(folder.name):
                shutil.rmtree(folder, ignore_errors=True)
