"""Masks for secure aggregation (after Bonawitz et al., CCS 2017), and the arithmetic they need.

Every participant holds an X25519 key; each pair agrees on a secret and stretches it, per
training and round, into a mask as long as the update. The lower-named site of a pair adds the
mask and the higher-named subtracts it, so the masks cancel in the sum. Each site adds a self
mask besides, which the aggregator removes only once the survivors reveal its seed
(`training.bonawitz` runs the protocol). Arithmetic is on fixed-point integers modulo 2**64, where
masking is exact; a float update is scaled by 2**SCALE_BITS and rounded, which is the only error.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SCALE_BITS = 24
_SCALE = float(1 << SCALE_BITS)


@dataclass(frozen=True)
class KeyPair:
    private: X25519PrivateKey

    @classmethod
    def generate(cls) -> KeyPair:
        return cls(X25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, path: Path) -> KeyPair:
        """The key kept at `path` (owner-only), made there the first time."""
        if path.exists():
            return cls(X25519PrivateKey.from_private_bytes(path.read_bytes()))
        made = cls.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(made.raw)
        return made

    @property
    def raw(self) -> bytes:
        return self.private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                          serialization.NoEncryption())

    @property
    def public(self) -> bytes:
        return self.private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def pair_secret(mine: KeyPair, me: str, peer: str, peer_public: bytes, context: str) -> bytes:
    """The 32-byte secret `me` and `peer` share for `context` (a training and round): X25519
    agreement, then HKDF-SHA256 bound to both names, so a secret serves one pair and one round."""
    if me == peer:
        raise ValueError(f"{me}: a site shares no mask with itself")
    shared = mine.private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    low, high = sorted((me, peer))
    info = f"fedctl-secagg|{context}|{low}|{high}".encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)


def mask(secret: bytes, size: int) -> np.ndarray:
    """`size` uniform words modulo 2**64: the ChaCha20 keystream of the pair's secret."""
    stream = Cipher(algorithms.ChaCha20(secret, b"\0" * 16), mode=None).encryptor().update(b"\0" * (8 * size))
    return np.frombuffer(stream, dtype="<u8").copy()


def encode(values: np.ndarray) -> np.ndarray:
    scaled = np.rint(np.asarray(values, dtype=np.float64) * _SCALE)
    if not np.all(np.abs(scaled) < 2.0 ** 62):
        raise ValueError("update too large to encode exactly: scale it down")
    return scaled.astype(np.int64).view(np.uint64)


def decode(words: np.ndarray) -> np.ndarray:
    return words.view(np.int64).astype(np.float64) / _SCALE


def masked(values: np.ndarray, me: str, secrets: dict[str, bytes], seed: bytes) -> np.ndarray:
    """What `me` sends: its encoded values plus its self mask (from `seed`) and the masks it shares
    with each peer (added when `me` sorts first in the pair, else subtracted); `secrets` maps each
    peer to their secret."""
    out = encode(values)
    with np.errstate(over="ignore"):
        out = out + mask(seed, out.size)
        for peer, secret in secrets.items():
            m = mask(secret, out.size)
            out = out + m if me < peer else out - m
    return out
