"""t-of-n Shamir secret sharing of 32-byte secrets, over the prime field of 2**521 - 1.

A share is (x, y) with x in 1..n; any t of them give the secret back (Lagrange at zero), and
fewer say nothing of it. Used by secure aggregation (`training.bonawitz`) for the self-mask seed
and the per-round masking key of each participant.
"""
from __future__ import annotations

import secrets

PRIME = (1 << 521) - 1   # a Mersenne prime above any 32-byte secret
SECRET_BYTES = 32


def split(secret: bytes, xs: list[int], threshold: int) -> dict[int, int]:
    """One share of `secret` for each x in `xs` (distinct, 1 and up); any `threshold` recover it."""
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"a secret is {SECRET_BYTES} bytes, not {len(secret)}")
    if not 1 <= threshold <= len(xs) or len(set(xs)) != len(xs) or min(xs) < 1:
        raise ValueError(f"cannot share {threshold} of {len(xs)} among x = {xs}")
    coefficients = [int.from_bytes(secret, "big")] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    return {x: _evaluate(coefficients, x) for x in xs}


def combine(shares: dict[int, int], threshold: int) -> bytes:
    """The secret from at least `threshold` shares (the first `threshold` by x are used)."""
    if len(shares) < threshold:
        raise ValueError(f"{len(shares)} shares, {threshold} needed")
    points = sorted(shares.items())[:threshold]
    total = 0
    for i, (xi, yi) in enumerate(points):
        num, den = 1, 1
        for j, (xj, _) in enumerate(points):
            if i != j:
                num = num * -xj % PRIME
                den = den * (xi - xj) % PRIME
        total = (total + yi * num * pow(den, -1, PRIME)) % PRIME
    if total >> (8 * SECRET_BYTES):
        raise ValueError("the shares do not agree on a secret")
    return total.to_bytes(SECRET_BYTES, "big")


def _evaluate(coefficients: list[int], x: int) -> int:
    y = 0
    for c in reversed(coefficients):
        y = (y * x + c) % PRIME
    return y
