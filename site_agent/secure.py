"""This site's part of secure aggregation (`training.bonawitz`), done by the agent as it prepares
an attempt's inputs: the job only hands on what is left for it. The secrets of each round stay
here, in a file per context that only the agent reads; a context that has passed a phase never
passes it again under another attempt (the same attempt, prepared again, gets the same answer).

Inputs that start a phase: `secagg-peers.json` (keys), `secagg-setups.json` (a local step),
`secagg-reveal.json` (a survivor's reveal).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from federation.spec.site import TLSConfig
from training import bonawitz
from training.secagg import KeyPair
from training.signing import Refused, Signer

PHASES = {"secagg-peers.json": "keys", "secagg-setups.json": "step", "secagg-reveal.json": "reveal"}
# Made here only: an input of these names from the federation is refused (it could choose the masks).
RESERVED = frozenset({"secrets.json", "secagg-setup.json", "secagg-report.json", "secagg-revealed.json"})


@dataclass(frozen=True)
class SecureAggregation:
    site: str
    folder: Path            # the contexts' secrets, the agent's alone
    agreement: KeyPair      # this site's long-term X25519 key (its public half is registered)
    tls: TLSConfig | None   # the site's certificate signs, the CA's checks the peers'

    def prepare(self, sid: str, inbox: Path, digest: str) -> None:
        """Do the phase an attempt's inputs call for, leaving its files in `inbox`; Refused when
        this site will not take part (the attempt is rejected, and the round with it). `digest`
        fixes the attempt's spec and inputs: the same attempt sent again with others (a new
        model under the same masks would tell the difference of two updates) is refused."""
        phase = next((p for name, p in PHASES.items() if (inbox / name).exists()), None)
        if phase is None:
            return
        if self.tls is None:
            raise Refused("secure aggregation needs the site's TLS certificate to sign with")
        request = json.loads((inbox / next(n for n, p in PHASES.items() if p == phase)).read_text())
        if not isinstance(request.get("context"), str):
            raise Refused("a round's context is a string")
        path = self.folder / (hashlib.sha256(request["context"].encode()).hexdigest() + ".json")
        state = json.loads(path.read_text()) if path.exists() else None
        done = (state or {}).get("done", {}).get(phase)
        if done is not None and (done["sid"], done["digest"]) != (sid, digest):
            raise Refused(f"context {request['context']} is used once: attempt {done['sid']} had its {phase}"
                          + (" with other inputs" if done["sid"] == sid else ""))
        if done is not None and "out" not in done:
            raise Refused(f"context {request['context']}: its secrets are gone (revealed)")
        if done is None:
            state, out = self._phase(phase, state, request)
            state["done"] = {**state.get("done", {}), phase: {"sid": sid, "digest": digest, "out": out}}
            if phase == "reveal":   # the step's secrets go with the rest
                state["done"]["step"] = {k: v for k, v in state["done"]["step"].items() if k != "out"}
            self._save(path, state)
            done = state["done"][phase]
        for name, content in done["out"].items():
            _write(inbox / name, json.dumps(content, sort_keys=True))

    def _phase(self, phase: str, state: dict[str, Any] | None, request: dict[str, Any]
               ) -> tuple[dict[str, Any], dict[str, Any]]:
        assert self.tls is not None
        signer = Signer.load(self.site, self.tls.cert, self.tls.key)
        ca = x509.load_pem_x509_certificate(self.tls.ca.read_bytes())
        if phase == "keys":
            if state is not None:
                raise Refused(f"context {request['context']} is used once: its keys were made already")
            state, setup = bonawitz.keys(self.site, request["context"], request["participants"],
                                         int(request["threshold"]), self.agreement, request["keys"], signer, ca)
            return state, {"secagg-setup.json": setup}
        if state is None:
            raise Refused(f"context {request['context']}: this site made no keys for it")
        if phase == "step":
            state, pairs, seed = bonawitz.step(state, self.site, request["setups"], ca, self.agreement)
            secrets = {"pairs": {v: s.hex() for v, s in pairs.items()}, "seed": seed.hex()}
            return state, {"secrets.json": secrets, "secagg-report.json": bonawitz.report(signer, state["context"])}
        state, revealed = bonawitz.reveal(state, self.site, request["reported"], request["dropped"], ca)
        return state, {"secagg-revealed.json": revealed}

    def _save(self, path: Path, state: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = path.with_suffix(".tmp")
        _write(temporary, json.dumps(state, sort_keys=True))
        os.replace(temporary, path)


def _write(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
