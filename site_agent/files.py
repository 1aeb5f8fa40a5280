"""An attempt's files on this site: its input folder (fetched and checked, with this site's part of
secure aggregation done in it), its output folder, this site's agreement key, and the logs its
data's rules keep here. Nothing here leaves the site but what an attempt left in its output folder."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from federation.errors import FederationError
from federation.jobs import AttemptState, parse_submission_id
from federation.spec import SiteConfig
from federation.spec.site import TLSConfig
from federation.v1 import federation_pb2 as pb
from site_agent.isolation import OSUser, hand_over
from site_agent.plan import SiteWord
from site_agent.secure import PHASES, RESERVED, SecureAggregation
from training import bonawitz, secagg
from training.signing import Refused, Signer

log = logging.getLogger("site_agent")

PRIVATE = ".fedctl-io"   # under the work_dir: attempts' folders, this site's keys, kept logs
MAX_OUTPUTS = 16
MAX_OUTPUT_BYTES = 4 << 20   # the federation's limit per file
MAX_KEPT_LOG = 4 << 20       # as the federation keeps of a log it receives

SID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
Fetch = Callable[[str, int, str], bytes]   # (job, attempt, name) -> data, from the federation


def work_dir(config: SiteConfig) -> Path:
    return config.spec.work_dir or Path(tempfile.gettempdir())


@dataclass(frozen=True)
class AttemptFiles:
    root: Path    # where attempts find their inputs and leave their outputs, one folder each
    site: str
    tls: TLSConfig | None = None   # the site's certificate, which signs its part of secure aggregation

    @classmethod
    def of(cls, config: SiteConfig) -> AttemptFiles:
        return cls(work_dir(config) / PRIVATE / config.metadata.name, config.metadata.name,
                   config.spec.federation.tls)

    def prepare(self, sid: str, a: pb.Assignment, fetch: Fetch | None,
                user: OSUser | None = None) -> dict[str, str] | SiteWord | None:
        """Fetch the attempt's inputs into its input folder and make its output folder, both
        `user`'s alone when jobs run as their own user; their paths for the job, or the site's word
        when it refuses an input, or None when an input could not be fetched (the next pass tries
        again)."""
        folder = self.root / sid
        inbox, outbox = folder / "in", folder / "out"
        env = {"FEDCTL_INPUT_DIR": str(inbox), "FEDCTL_OUTPUT_DIR": str(outbox)}
        if user is not None and folder.is_dir() and folder.stat().st_uid == user.uid:
            return env   # handed over (the attempt is adopted): what is in it is the job's, not to be written
        outbox.mkdir(parents=True, exist_ok=True, mode=0o700)
        inbox.mkdir(exist_ok=True, mode=0o700)
        if user is not None:
            self.root.chmod(0o711)   # others may pass through to their own folder, not list them
        for ref in a.inputs:
            if Path(ref.name).name != ref.name or ref.name.startswith("."):
                return SiteWord(AttemptState.REJECTED, f"invalid input name {ref.name[:64]!r}")
            if ref.name in RESERVED:   # the federation could choose the masks
                return SiteWord(AttemptState.REJECTED, f"input {ref.name}: a name this site keeps for what it makes "
                                                       "for secure aggregation")
            if not self._fetched(inbox / ref.name, ref, a, fetch):
                return None
        if any(ref.name in PHASES for ref in a.inputs):
            digest = hashlib.sha256(a.spec.json.encode() + b"".join(
                f"\0{r.name}\0{r.sha256}".encode() for r in sorted(a.inputs, key=lambda r: r.name))).hexdigest()
            try:
                self.secure.prepare(sid, inbox, digest)
            except Refused as e:
                return SiteWord(AttemptState.REJECTED, f"secure aggregation: {e}")
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                why = f"{type(e).__name__}: {str(e)[:200]}"
                return SiteWord(AttemptState.REJECTED, f"secure aggregation: a malformed input ({why})")
        hand_over([folder, inbox, outbox, *inbox.iterdir()], user)
        return env

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

    def agreement_proof(self) -> str:
        """The agreement key signed with this site's TLS key, for its peers; none without TLS."""
        if self.tls is None:
            return ""
        signer = Signer.load(self.site, self.tls.cert, self.tls.key)
        return json.dumps(bonawitz.agreement_proof(signer, self.agreement_key()), sort_keys=True)

    @property
    def secure(self) -> SecureAggregation:
        return SecureAggregation(self.site, self.root.parent / f"{self.site}.secagg", self.agreement_key(), self.tls)

    def outputs(self, sid: str) -> list[tuple[str, bytes]]:
        """The plain files an attempt left in its output folder, at most MAX_OUTPUTS of
        MAX_OUTPUT_BYTES. The folder is the job's: a link in it (or in its place) is not followed,
        and a file not owned by the folder's owner is not sent, so a job cannot ship what only the
        agent may read."""
        try:
            folder = os.open(self.root / sid / "out", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            return []
        try:
            owner = os.fstat(folder).st_uid
            with os.scandir(folder) as entries:
                names = sorted(e.name for e in entries if e.is_file(follow_symlinks=False))
            return [f for name in names[:MAX_OUTPUTS] if (f := _output(sid, folder, name, owner)) is not None]
        finally:
            os.close(folder)

    @property
    def logs_dir(self) -> Path:
        """Logs kept at the site, one file an attempt; outside `root`, so `forget` leaves them."""
        return self.root.parent / f"{self.site}.logs"

    def keep_log(self, sid: str, offset: int, data: bytes) -> None:
        """Write an attempt's log bytes at `offset` of its kept log (a resend rewrites the same bytes),
        up to MAX_KEPT_LOG: the agent writes as root, so no quota of the job's would stop it."""
        if not SID_RE.match(sid):
            raise ValueError(f"not a submission id: {sid[:64]!r}")
        data = data[:max(0, MAX_KEPT_LOG - offset)]
        if not data:
            return
        self.logs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.logs_dir / f"{sid}.log", os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.seek(offset)
            f.write(data)

    def kept_logs(self, job_id: str) -> list[tuple[int, Path]]:
        """(attempt, path) of each kept log of a job, in attempt order."""
        if not SID_RE.match(job_id) or not self.logs_dir.is_dir():
            return []
        found = [(parse_submission_id(p.name[:-4]), p) for p in self.logs_dir.glob(f"fed-{job_id}-*.log")]
        return sorted((ids[1], p) for ids, p in found if ids is not None and ids[0] == job_id)

    def forget(self, keep: Callable[[str], bool]) -> None:
        """Remove the folders of the attempts `keep` lets go."""
        if not self.root.is_dir():
            return
        for folder in self.root.iterdir():
            if not keep(folder.name):
                shutil.rmtree(folder, ignore_errors=True)


def _output(sid: str, folder: int, name: str, owner: int) -> tuple[str, bytes] | None:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=folder)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != owner:
            log.warning("%s: output %s is not a plain file of the attempt's own; not sent", sid, name)
            return None
        if st.st_size > MAX_OUTPUT_BYTES:
            log.warning("%s: output %s is over %d bytes; not sent", sid, name, MAX_OUTPUT_BYTES)
            return None
        return name, f.read(MAX_OUTPUT_BYTES + 1)[:MAX_OUTPUT_BYTES]
