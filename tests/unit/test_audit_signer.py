"""The signer's memory of what this process signed, which spares a watch over the log from
verifying those signatures again: it must vouch for exactly those (hash, signature) pairs."""
from __future__ import annotations

from dataclasses import replace

from cryptography.hazmat.primitives.asymmetric import ec

from federation.audit import GENESIS, AuditRecord, Signer, verify


def _chain(signer: Signer, n: int) -> list[AuditRecord]:
    out, prev = [], GENESIS
    for seq in range(1, n + 1):
        out.append(signer.seal(AuditRecord(seq, float(seq), "admin", "job.submit", f"j-{seq}", {}, prev)))
        prev = out[-1].hash
    return out


def test_a_signer_vouches_only_once_it_remembers_and_once_a_record():
    signer = Signer(ec.generate_private_key(ec.SECP256R1()))
    (before,) = _chain(signer, 1)
    assert not signer.signed_here(before), "signed before anything asked it to remember"
    signer.remember()
    (record,) = _chain(signer, 1)
    assert signer.signed_here(record)
    assert not signer.signed_here(record), "asked once, then forgotten"


def test_a_signature_moved_onto_another_record_is_not_vouched_for_and_fails_verification():
    signer = Signer(ec.generate_private_key(ec.SECP256R1()))
    signer.remember()
    first, second = _chain(signer, 2)
    swapped = replace(second, signature=first.signature)   # both the key's, over different hashes
    assert not signer.signed_here(swapped)
    _, _, wrong = verify([first, swapped], signer.key.public_key(), signed_here=signer.signed_here)
    assert "record 2" in wrong and "signature" in wrong


def test_the_memory_is_bounded_and_what_it_dropped_is_verified_the_slow_way():
    signer = Signer(ec.generate_private_key(ec.SECP256R1()))
    signer.MEMO = 3
    signer.remember()
    records = _chain(signer, 5)
    assert [signer.signed_here(r) for r in records] == [True, True, True, False, False]
    signer.remember()
    again = _chain(signer, 5)
    _, head, wrong = verify(again, signer.key.public_key(), signed_here=signer.signed_here)
    assert (wrong, head) == ("", again[-1].hash)
