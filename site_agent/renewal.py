"""A site's certificate renewed before it expires: a new key made here, the old certificate proves who asks.

The new key and certificate replace the files the agent's channel reads, so the next session
uses them; running work is not touched (its Ray jobs do not depend on the channel).
"""
from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from cryptography import x509

from federation.pki import new_request
from federation.v1 import federation_pb2 as pb
from federation.v1 import federation_pb2_grpc as pb_grpc

RENEW_AT = 1 / 3   # renew when less than this part of the certificate's lifetime is left


def due(cert: Path, now: dt.datetime | None = None) -> bool:
    c = x509.load_pem_x509_certificate(cert.read_bytes())
    start, end = c.not_valid_before_utc, c.not_valid_after_utc
    now = now or dt.datetime.now(dt.UTC)
    return (end - now) < (end - start) * RENEW_AT


def renew(stub: pb_grpc.SiteServiceStub, cert: Path, key: Path, timeout: float = 10.0) -> None:
    """Replace `cert` and `key` with a renewed pair; on any failure the old pair stays."""
    staging = key.parent / ".renewal"
    csr, new_key = new_request("site", staging)
    try:
        reply = stub.RenewCertificate(pb.RenewCertificateRequest(csr_pem=csr), timeout=timeout)
        new_cert = staging / "site.pem"
        new_cert.write_bytes(reply.cert_pem)
        # The key first: a crash between the two leaves the old certificate with a key it does not
        # match, which the next start reports; both files are written whole before either moves.
        os.replace(new_key, key)
        os.replace(new_cert, cert)
    finally:
        for leftover in staging.glob("*"):
            leftover.unlink()
        staging.rmdir()
