"""Secure aggregation with double masking (Bonawitz et al., CCS 2017): one site's side of each
phase, and the aggregator's unmasking. Pure but for fresh randomness; the site agent keeps the
state between phases (`site_agent.secure`), the federation only relays signed messages.

A round (its `context`, used once) goes:

1. **keys**: each site makes a masking key pair and a self-mask seed for the context, splits both
   secrets t-of-n (Shamir) among the participants, encrypts each share to its peer's agreement
   key, which that peer signed when it registered (`agreement_proof`), and signs it all
   (`training.signing`): its masking key, a hash of its seed, and the peer keys it encrypted to.
2. **step**: each site checks every peer's signed keys (a substituted key is refused, the round
   with it), decrypts the shares sent to it, and masks its update with its self mask and the
   pairwise masks, which cancel in the sum. With it goes a signed report.
3. **reveal**: shown who reported (each by its own signed report) and who did not, each survivor
   reveals, once per context, its share of the self-mask seed of every site that reported and of
   the masking key of every site that did not: never both for one site. The aggregator needs t
   shares of either; with t above half, no federation that shows different sites different lists
   gathers t of both for one site, and a reported site it calls lost keeps its self mask.
4. The aggregator removes the self masks and the dropped sites' pairwise masks: the exact sum.
"""
from __future__ import annotations

import hashlib
import itertools
import math
import secrets
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from training import shamir
from training.secagg import KeyPair, mask, pair_secret
from training.signing import Refused, Signer, verify

MIN_SITES = 3
SECRET = ("masking", "seed", "received")   # a context's secrets, dropped once this site revealed
State = dict[str, Any]   # one site's secrets for one context, as the agent keeps them (JSON)


def threshold(n: int, fraction: float) -> int:
    """Shares needed to unmask a round of `n` sites: above half, and at least `fraction` of them."""
    return max(n // 2 + 1, math.ceil(fraction * n - 1e-9))


def check_key(public: bytes, whose: str) -> bytes:
    """An X25519 public key fit to agree on a secret: 32 bytes, not zero nor of low order (which
    would make every secret agreed with it known to all)."""
    if len(public) != 32:
        raise Refused(f"{whose}: an X25519 key is 32 bytes, not {len(public)}")
    try:
        X25519PrivateKey.generate().exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError:
        raise Refused(f"{whose}: a zero or low-order X25519 key") from None
    return public


def agreement_proof(signer: Signer, mine: KeyPair) -> dict[str, Any]:
    """This site's long-term agreement key, signed: sent when it registers, checked by every peer
    before it encrypts a share to the key."""
    return signer.sign({"site": signer.site, "agreement_key": mine.public.hex()})


def peer_key(v: str, proof: Any, ca: x509.Certificate) -> bytes:
    body = verify(proof, v, ca)
    if body.get("site") != v:
        raise Refused(f"{v}: its agreement key is stated for {body.get('site')!r}")
    return check_key(bytes.fromhex(str(body.get("agreement_key", ""))), f"{v}'s agreement key")


def keys(me: str, context: str, participants: list[str], t: int, mine: KeyPair,
         proofs: Mapping[str, Any], signer: Signer, ca: x509.Certificate) -> tuple[State, dict[str, Any]]:
    """Phase 1: this site's state for the context and its signed keys for the peers, each share
    encrypted to a peer key that peer signed (`proofs`)."""
    if not isinstance(context, str) or not context:
        raise Refused("a round's context is a non-empty string")
    sites = sorted(participants)
    if me not in sites or len(set(sites)) != len(sites):
        raise Refused(f"{me} is not among the participants {sites}")
    if len(sites) < MIN_SITES or not len(sites) // 2 < t <= len(sites):
        raise Refused(f"a threshold of {t} of {len(sites)} sites: secure aggregation needs at least "
                      f"{MIN_SITES} sites and a threshold above half")
    missing = [v for v in sites if v != me and v not in proofs]
    if missing:
        raise Refused(f"no signed agreement key of {', '.join(missing)}")
    peers = {v: peer_key(v, proofs[v], ca) for v in sites if v != me}
    masking, seed = X25519PrivateKey.generate(), secrets.token_bytes(32)
    xs = {v: i + 1 for i, v in enumerate(sites)}
    b_shares = shamir.split(seed, list(xs.values()), t)
    s_shares = shamir.split(KeyPair(masking).raw, list(xs.values()), t)
    mine_shares = {v: {"b": format(b_shares[x], "x"), "s": format(s_shares[x], "x")} for v, x in xs.items()}
    body = {"site": me, "context": context, "participants": sites, "threshold": t,
            "masking_key": KeyPair(masking).public.hex(), "seed_hash": hashlib.sha256(seed).hexdigest(),
            "agreement_key": mine.public.hex(), "peers": {
                v: key.hex() for v, key in peers.items()},
            "shares": {v: _seal(mine, key, context, me, v, mine_shares[v]).hex() for v, key in peers.items()}}
    state = {"context": context, "participants": sites, "threshold": t, "masking": KeyPair(masking).raw.hex(),
             "seed": seed.hex(), "received": {me: mine_shares[me]}, "phase": "keys"}
    return state, signer.sign(body)


def step(state: State, me: str, setups: Mapping[str, Any], ca: x509.Certificate,
         mine: KeyPair) -> tuple[State, dict[str, bytes], bytes]:
    """Phase 2: check the peers' keys; the pairwise secrets and the self-mask seed to mask with."""
    if state["phase"] != "keys":
        raise Refused(f"context {state['context']} has masked an update already: it is used once")
    bodies = {v: _setup(v, signed, state, ca) for v, signed in setups.items()}
    u1 = sorted(bodies)
    if me not in bodies or bodies[me]["masking_key"] != KeyPair(_private(state["masking"])).public.hex():
        raise Refused(f"{me}'s own keys are not the ones it made for {state['context']}")
    if len(u1) < max(state["threshold"], MIN_SITES):
        raise Refused(f"{len(u1)} sites have keys: a secure round masks among at least {MIN_SITES} and the "
                      f"threshold {state['threshold']}")
    mine_to = bodies[me]["peers"]
    received = dict(state["received"])
    for v in u1:
        if v == me:
            continue
        body = bodies[v]
        if body["agreement_key"] != mine_to.get(v) or body["peers"].get(me) != mine.public.hex():
            raise Refused(f"{v}'s agreement key was substituted between the sites: refusing the round")
        received[v] = _open(mine, bytes.fromhex(body["agreement_key"]), state["context"], v, me,
                            bytes.fromhex(body["shares"][me]))
    masking = KeyPair(_private(state["masking"]))
    pairs = {v: pair_secret(masking, me, v, check_key(bytes.fromhex(bodies[v]["masking_key"]), f"{v}'s masking key"),
                            state["context"]) for v in u1 if v != me}
    return {**state, "received": received, "u1": u1, "phase": "masked"}, pairs, bytes.fromhex(state["seed"])


def report(signer: Signer, context: str) -> dict[str, Any]:
    """What goes up beside a masked update: proof to the peers that this site reported."""
    return signer.sign({"site": signer.site, "context": context, "reported": True})


def reveal(state: State, me: str, reported: Mapping[str, Any], dropped: list[str],
           ca: x509.Certificate) -> tuple[State, dict[str, Any]]:
    """Phase 3: this site's shares for the aggregator, once per context."""
    if state["phase"] != "masked":
        raise Refused(f"context {state['context']}: " + ("revealed once already" if state["phase"] == "revealed"
                                                          else "this site masked no update in it"))
    for v, signed in reported.items():
        body = verify(signed, v, ca)
        if body.get("site") != v or body.get("context") != state["context"] or body.get("reported") is not True:
            raise Refused(f"{v}: its report is not for {state['context']}")
    r, d, u1 = set(reported), set(dropped), set(state["u1"])
    if r & d or r | d != u1:
        raise Refused(f"reported {sorted(r)} and dropped {sorted(d)} are not a split of the round's {sorted(u1)}")
    if me not in r or len(r) < state["threshold"]:
        raise Refused(f"{len(r)} sites reported, fewer than the threshold {state['threshold']}, or not {me}")
    x = state["participants"].index(me) + 1
    shares = state["received"]
    revealed = {"site": me, "x": x, "b": {v: shares[v]["b"] for v in sorted(r)},
                "s": {v: shares[v]["s"] for v in sorted(d)}}
    kept = {k: v for k, v in state.items() if k not in SECRET}   # what is left could unmask nothing
    return {**kept, "phase": "revealed"}, revealed


def unmask(masked: Mapping[str, np.ndarray], setups: Mapping[str, Any], revealed: list[dict[str, Any]],
           t: int) -> np.ndarray:
    """Phase 4, at the aggregator: the sum of the reported sites' words, masks removed. `setups`
    are the round's signed keys (bodies used), `revealed` the survivors' shares."""
    if len(revealed) < t:
        raise ValueError(f"{len(revealed)} sites revealed shares, {t} needed")
    total = np.zeros_like(next(iter(masked.values())))
    context = next(iter(setups.values()))["body"]["context"]
    with np.errstate(over="ignore"):
        for words in masked.values():
            total = total + words
        for v in masked:
            seed = _recover(v, {r["x"]: int(r["b"][v], 16) for r in revealed}, t,
                            _hashes_to(setups[v]["body"]["seed_hash"]))
            total = total - mask(seed, total.size)
        for v in sorted(set(setups) - set(masked)):
            lost = KeyPair(X25519PrivateKey.from_private_bytes(_recover(
                v, {r["x"]: int(r["s"][v], 16) for r in revealed}, t, _opens(setups[v]["body"]["masking_key"]))))
            for u in masked:
                m = mask(pair_secret(lost, v, u, bytes.fromhex(setups[u]["body"]["masking_key"]), context), total.size)
                total = total - m if u < v else total + m
    return total


def _recover(v: str, shares: dict[int, int], t: int, matches: Callable[[bytes], bool]) -> bytes:
    """The secret `v` committed to in its signed keys, from t of the revealed shares: a wrong share
    (a survivor lying) is passed over while t good ones remain, never summed in silently."""
    for chosen in itertools.islice(itertools.combinations(sorted(shares), t), 1000):
        try:
            secret = shamir.combine({x: shares[x] for x in chosen}, t)
        except ValueError:
            continue
        if matches(secret):
            return secret
    raise ValueError(f"the shares revealed for {v} do not give back the secret it signed")


def _hashes_to(signed: str) -> Callable[[bytes], bool]:
    return lambda seed: hashlib.sha256(seed).hexdigest() == signed


def _opens(signed: str) -> Callable[[bytes], bool]:
    return lambda private: KeyPair(X25519PrivateKey.from_private_bytes(private)).public.hex() == signed


def _setup(v: str, signed: Any, state: State, ca: x509.Certificate) -> dict[str, Any]:
    body = verify(signed, v, ca)
    expected = (v, state["context"], state["participants"], state["threshold"])
    if (body.get("site"), body.get("context"), body.get("participants"), body.get("threshold")) != expected:
        raise Refused(f"{v}: its keys are for another round or set of sites")
    return body


def _private(hex_key: str) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(bytes.fromhex(hex_key))


def _box(mine: KeyPair, peer: bytes, context: str, sender: str, receiver: str) -> tuple[AESGCM, bytes]:
    label = f"fedctl-secagg-share|{context}|{sender}|{receiver}".encode()
    shared = mine.private.exchange(X25519PublicKey.from_public_bytes(peer))
    return AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label).derive(shared)), label


def _seal(mine: KeyPair, peer: bytes, context: str, sender: str, receiver: str, shares: dict[str, str]) -> bytes:
    box, label = _box(mine, peer, context, sender, receiver)
    nonce = secrets.token_bytes(12)
    return nonce + box.encrypt(nonce, f"{shares['b']}|{shares['s']}".encode(), label)


def _open(mine: KeyPair, peer: bytes, context: str, sender: str, receiver: str, sealed: bytes) -> dict[str, str]:
    box, label = _box(mine, peer, context, sender, receiver)
    try:
        b, s = box.decrypt(sealed[:12], sealed[12:], label).decode().split("|")
    except Exception:
        raise Refused(f"{sender}: its shares for {receiver} do not open") from None
    return {"b": b, "s": s}
